// Archive-room status page: rooms with their latest readings, and device health. zh-CN first.
"use strict";
const I18N = {
  zh: { title: "档案库房八防监测", connecting: "连接中…", online: "在线", offline: "离线", faulty: "故障", unknown: "未知",
        devices: "设备状态", device: "设备", room: "库房", protocol: "协议", status: "状态", lastSeen: "最近数据",
        rejected: "拒收数", error: "故障原因", live: "实时", lost: "连接中断", noData: "暂无数据", switchTo: "English",
        temperature: "温度", humidity: "相对湿度", pm25: "PM2.5", pm10: "PM10", smoke: "烟感", door: "门磁",
        water_leak: "漏水", light: "照度", uv: "紫外线", co2: "二氧化碳", hcho: "甲醛", tvoc: "TVOC", pest: "虫情",
        rodent: "鼠情", intrusion: "入侵", power: "功率", fire: "火警", battery: "电量", voltage: "电压",
        running: "运行", dew_point: "露点", so2: "二氧化硫", no2: "二氧化氮", o3: "臭氧",
        on: { smoke: "报警", door: "开", water_leak: "漏水", rodent: "发现", intrusion: "入侵", fire: "火警" },
        off: { smoke: "正常", door: "关", water_leak: "正常", rodent: "无", intrusion: "无", fire: "正常" } },
  en: { title: "Archive room protection", connecting: "Connecting…", online: "online", offline: "offline", faulty: "faulty",
        unknown: "unknown", devices: "Devices", device: "Device", room: "Room", protocol: "Protocol", status: "Status",
        lastSeen: "Last reading", rejected: "Rejected", error: "Error", live: "Live", lost: "Disconnected",
        noData: "No data yet", switchTo: "中文", temperature: "Temperature", humidity: "Humidity", pm25: "PM2.5",
        pm10: "PM10", smoke: "Smoke", door: "Door", water_leak: "Water leak", light: "Light", uv: "UV", co2: "CO₂",
        hcho: "HCHO", tvoc: "TVOC", pest: "Pests", rodent: "Rodents", intrusion: "Intrusion", power: "Power", fire: "Fire",
        battery: "Battery", voltage: "Voltage", running: "Running", dew_point: "Dew point", so2: "SO₂", no2: "NO₂", o3: "O₃",
        on: { smoke: "ALARM", door: "open", water_leak: "LEAK", rodent: "seen", intrusion: "ALARM", fire: "FIRE" },
        off: { smoke: "clear", door: "closed", water_leak: "dry", rodent: "none", intrusion: "clear", fire: "clear" } },
};
const BINARY = new Set(["smoke", "door", "water_leak", "rodent", "intrusion", "fire"]);
let lang = localStorage.getItem("bafang.lang") || "zh";
let rooms = [], latest = [], devices = [], protections = [];
const t = (k) => I18N[lang][k] ?? k;
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmtTime = (iso) => iso ? new Date(iso).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB", { hour12: false }) : "—";

function render() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { if (el.id !== "conn") el.textContent = t(el.dataset.i18n); });
  document.getElementById("lang").textContent = t("switchTo");
  const offline = new Set(devices.filter((d) => d.status !== "online").map((d) => d.id));
  const main = document.getElementById("rooms");
  main.innerHTML = rooms.map((room) => {
    const rows = latest.filter((r) => r.room === room.id);
    const cards = rows.map((r) => {
      const binary = BINARY.has(r.metric);
      const shown = binary ? (r.value >= 1 ? t("on")[r.metric] : t("off")[r.metric]) : Number(r.value).toFixed(1);
      const cls = [binary && r.value >= 1 && r.metric !== "door" ? "alarm" : "", offline.has(r.device) ? "stale" : ""].join(" ");
      return `<div class="metric ${cls}" data-device="${esc(r.device)}" data-metric="${esc(r.metric)}" title="${esc(r.device)} · ${esc(fmtTime(r.time))}">
        <div class="name">${esc(t(r.metric))} · ${esc(r.device)}</div>
        <div class="value">${esc(shown)}<span class="unit">${binary ? "" : esc(r.unit)}</span></div></div>`;
    }).join("");
    const badges = protections.filter((p) => p.room === room.id).map((p) =>
      `<span class="prot ${esc(p.state)}" data-protection="${esc(p.protection)}" title="${esc(p.reason || "")}">${esc(lang === "zh" ? p.name_zh : p.name_en)}</span>`).join("");
    return `<article class="room" data-room="${esc(room.id)}"><h2>${esc(room.name)}</h2>
      <div class="prots">${badges}</div>
      <div class="metrics">${cards || `<div class="metric"><div class="name">${esc(t("noData"))}</div></div>`}</div></article>`;
  }).join("");
  const roomName = Object.fromEntries(rooms.map((r) => [r.id, r.name]));
  document.querySelector("#devices tbody").innerHTML = devices.map((d) => `<tr data-device="${esc(d.id)}">
    <td>${esc(d.name ? `${d.name} (${d.id})` : d.id)}</td><td>${esc(roomName[d.room] || d.room)}</td><td>${esc(d.protocol)}</td>
    <td><span class="status ${esc(d.status)}">${esc(t(d.status))}</span></td><td>${esc(fmtTime(d.last_seen))}</td>
    <td>${Object.values(d.rejected || {}).reduce((a, b) => a + b, 0)}</td><td>${esc(d.last_error || "")}</td></tr>`).join("");
}

async function refresh() {
  const conn = document.getElementById("conn");
  try {
    const get = async (u) => { const r = await fetch(u); if (!r.ok) throw new Error(u + " " + r.status); return r.json(); };
    let site;
    [site, rooms, latest, devices, protections] = await Promise.all([
      get("/api/v1/site"), get("/api/v1/rooms"), get("/api/v1/readings/latest"), get("/api/v1/devices"),
      get("/api/v1/protections"),
    ]);
    document.getElementById("site").textContent = site.name;
    conn.textContent = t("live"); conn.className = "conn ok";
    render();
  } catch (e) {
    conn.textContent = t("lost"); conn.className = "conn bad";
  }
}

document.getElementById("lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh"; localStorage.setItem("bafang.lang", lang); render();
});
setInterval(() => { document.getElementById("clock").textContent = fmtTime(new Date().toISOString()); }, 1000);
refresh();
setInterval(refresh, 5000);
