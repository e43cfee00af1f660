"""Decode tables, byte orders, signed values, fault codes and request planning: pure functions, tables."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pymodbus.framer import FramerRTU

from collectors.modbus import MAX_BITS, MAX_REGISTERS, decode, encode, plan_reads
from core.config import ModbusPoint
from core.types import Reason
from core.validate import check_modbus


def point(metric: str = "temperature", **fields: Any) -> ModbusPoint:
    return ModbusPoint.model_validate({"metric": metric, "address": 0, **fields})


# (type, byte order, registers as sent on the wire, raw value)
DECODE_CASES = [
    ("float32", "ABCD", [0x4148, 0x0000], 12.5),
    ("float32", "CDAB", [0x0000, 0x4148], 12.5),
    ("float32", "BADC", [0x4841, 0x0000], 12.5),
    ("float32", "DCBA", [0x0000, 0x4841], 12.5),
    ("float32", "ABCD", [0xC148, 0x0000], -12.5),
    ("int16", "ABCD", [0xFF33], -205),
    ("int16", "BADC", [0x33FF], -205),
    ("int16", "CDAB", [0xFF33], -205),  # one word: a word swap changes nothing
    ("uint16", "ABCD", [0xFF33], 65331),
    ("uint16", "DCBA", [0x33FF], 65331),
    ("uint32", "ABCD", [0x0001, 0x0002], 65538),
    ("uint32", "CDAB", [0x0002, 0x0001], 65538),
    ("uint32", "BADC", [0x0100, 0x0200], 65538),
    ("uint32", "DCBA", [0x0200, 0x0100], 65538),
    ("int32", "ABCD", [0xFFFF, 0xFFFE], -2),
    ("int32", "CDAB", [0xFFFE, 0xFFFF], -2),
    ("int32", "DCBA", [0xFEFF, 0xFFFF], -2),
    ("uint64", "ABCD", [0x0000, 0x0000, 0x0001, 0x0002], 65538),
    ("uint64", "CDAB", [0x0002, 0x0001, 0x0000, 0x0000], 65538),
    ("int64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], -2),
    ("int64", "DCBA", [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF], -2),
    ("float64", "ABCD", [0x4029, 0x0000, 0x0000, 0x0000], 12.5),
    ("float64", "CDAB", [0x0000, 0x0000, 0x0000, 0x4029], 12.5),
    ("float64", "BADC", [0x2940, 0x0000, 0x0000, 0x0000], 12.5),
    ("float64", "DCBA", [0x0000, 0x0000, 0x0000, 0x2940], 12.5),
]


@pytest.mark.parametrize(("data_type", "order", "registers", "expected"), DECODE_CASES)
def test_decode_known_register_values(
    data_type: str, order: str, registers: list[int], expected: float
) -> None:
    p = point("pm25", type=data_type, byte_order=order)
    assert decode(p, registers) == expected


@pytest.mark.parametrize(("data_type", "order", "registers", "value"), DECODE_CASES)
def test_encode_is_the_inverse_of_decode(
    data_type: str, order: str, registers: list[int], value: float
) -> None:
    assert encode(value, data_type, order) == registers


@pytest.mark.parametrize(("bits", "expected"), [([True], 1.0), ([False], 0.0), ([1], 1.0), ([0], 0.0)])
def test_decode_bits(bits: list[Any], expected: float) -> None:
    assert decode(point("smoke", table="discrete"), bits) == expected


def test_decode_refuses_short_input() -> None:
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode(point("pm25", type="float32"), [0x4148])


def test_xy_md02_frame() -> None:
    """environment.md: 01 04 00 01 00 02 20 0B → 01 04 04 01 31 02 22 2A CE = 30.5 °C, 54.6 %RH."""
    request = bytes.fromhex("010400010002")
    assert FramerRTU.compute_CRC(request) == 0x200B
    reply = bytes.fromhex("010404013102222ACE")
    assert FramerRTU.compute_CRC(reply[:-2]) == int.from_bytes(reply[-2:], "big")
    registers = [int.from_bytes(reply[3 + 2 * i : 5 + 2 * i], "big") for i in range(reply[2] // 2)]
    temperature = point("temperature", table="input", address=1, type="int16", scale=0.1)
    humidity = point("humidity", table="input", address=2, type="uint16", scale=0.1)
    assert check_modbus(temperature, decode(temperature, registers[0:1])) == pytest.approx(30.5)
    assert check_modbus(humidity, decode(humidity, registers[1:2])) == pytest.approx(54.6)
    assert check_modbus(temperature, decode(temperature, [0xFF33])) == pytest.approx(-20.5)


NAN32 = [0x7FC0, 0x0000]
INF32 = [0x7F80, 0x0000]

# (point fields, registers, stored value or rejection reason)
VALIDATE_CASES: list[tuple[dict[str, Any], list[int], float | Reason]] = [
    ({"metric": "temperature", "type": "int16", "scale": 0.1}, [0x00FA], 25.0),
    ({"metric": "temperature", "type": "int16", "scale": 0.1}, [0x7FFF], Reason.FAULT_CODE),
    ({"metric": "temperature", "type": "int16", "scale": 0.1}, [0x8000], Reason.FAULT_CODE),
    ({"metric": "temperature", "type": "int16", "scale": 0.1}, [0xFFFF], -0.1),  # −1 is a real value
    ({"metric": "temperature", "type": "int16", "scale": 0.1}, [0x0384], Reason.OUT_OF_RANGE),  # 90 °C
    ({"metric": "temperature", "type": "int16", "scale": 0.1}, [0xFE70], -40.0),  # the range's low end
    ({"metric": "temperature", "type": "int16", "scale": 0.1}, [0xFE6F], Reason.OUT_OF_RANGE),  # −40.1 °C
    ({"metric": "humidity", "type": "uint16", "scale": 0.1}, [0xFFFF], Reason.FAULT_CODE),
    ({"metric": "humidity", "type": "uint16", "scale": 0.1}, [0x7FFF], Reason.FAULT_CODE),
    ({"metric": "humidity", "type": "uint16", "scale": 0.1}, [1001], Reason.OUT_OF_RANGE),
    ({"metric": "humidity", "type": "uint16", "scale": 0.1}, [1000], 100.0),
    ({"metric": "pm25", "type": "float32"}, NAN32, Reason.NAN),
    ({"metric": "pm25", "type": "float32"}, INF32, Reason.NAN),
    ({"metric": "pm25", "type": "float32"}, encode(-999.0, "float32"), Reason.FAULT_CODE),
    ({"metric": "pm25", "type": "float32", "byte_order": "CDAB"}, [0x0000, 0x4148], 12.5),
    ({"metric": "temperature", "type": "int16", "scale": 0.1, "offset": -1.0}, [0x00FA], 24.0),
]


@pytest.mark.parametrize(("fields", "registers", "expected"), VALIDATE_CASES)
def test_decode_then_validate(fields: dict[str, Any], registers: list[int], expected: float | Reason) -> None:
    p = ModbusPoint.model_validate({"address": 0, **fields})
    verdict = check_modbus(p, decode(p, registers))
    if isinstance(expected, Reason):
        assert isinstance(verdict, tuple) and verdict[0] is expected, verdict
    else:
        assert isinstance(verdict, float) and not math.isnan(verdict)
        assert verdict == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# Request planning


def p(table: str, address: int, data_type: str | None = None) -> ModbusPoint:
    metric = "smoke" if table in ("coil", "discrete") else "temperature"
    return ModbusPoint.model_validate(
        {"metric": metric, "table": table, "address": address, "type": data_type}
    )


PLAN_CASES: list[tuple[str, list[ModbusPoint], list[tuple[str, int, int]]]] = [
    ("one point", [p("holding", 3)], [("holding", 3, 1)]),
    ("adjacent", [p("holding", 0), p("holding", 1)], [("holding", 0, 2)]),
    ("unsorted", [p("holding", 1), p("holding", 0)], [("holding", 0, 2)]),
    ("float after word", [p("input", 10, "float32"), p("input", 12)], [("input", 10, 3)]),
    ("gap of 8 merged", [p("holding", 0), p("holding", 9)], [("holding", 0, 10)]),
    ("gap of 9 split", [p("holding", 0), p("holding", 10)], [("holding", 0, 1), ("holding", 10, 1)]),
    (
        "tables apart, in table order",
        [p("discrete", 0), p("input", 0), p("coil", 0), p("holding", 0)],
        [("holding", 0, 1), ("input", 0, 1), ("coil", 0, 1), ("discrete", 0, 1)],
    ),
    ("far apart", [p("holding", 0), p("holding", 124)], [("holding", 0, 1), ("holding", 124, 1)]),
    (
        "125 limit",
        [p("holding", a) for a in range(0, 126)],
        [("holding", 0, MAX_REGISTERS), ("holding", 125, 1)],
    ),
    (
        "a float32 may not cross the limit",
        [*(p("holding", a) for a in range(0, 124)), p("holding", 124, "float32")],
        [("holding", 0, 124), ("holding", 124, 2)],
    ),
    ("bits adjacent", [p("discrete", a) for a in (0, 1, 2, 5)], [("discrete", 0, 6)]),
    ("2000 bit limit", [p("coil", a) for a in range(2001)], [("coil", 0, MAX_BITS), ("coil", 2000, 1)]),
    ("64-bit values", [p("holding", 0, "float64"), p("holding", 4, "uint64")], [("holding", 0, 8)]),
]


@pytest.mark.parametrize(("name", "points", "expected"), PLAN_CASES, ids=[c[0] for c in PLAN_CASES])
def test_plan_reads(name: str, points: list[ModbusPoint], expected: list[tuple[str, int, int]]) -> None:
    plan = plan_reads(points)
    assert [(r.table, r.address, r.count) for r in plan] == expected
    # every point is served by exactly one request that covers it
    served = [q for r in plan for q in r.points]
    assert sorted(map(id, served)) == sorted(map(id, points))
    for r in plan:
        for q in r.points:
            assert r.address <= q.address and q.address + q.count <= r.address + r.count


def test_plan_without_gaps() -> None:
    plan = plan_reads([p("holding", 0), p("holding", 2), p("holding", 3)], max_gap=0)
    assert [(r.table, r.address, r.count, r.has_gaps) for r in plan] == [
        ("holding", 0, 1, False),
        ("holding", 2, 2, False),
    ]
    assert plan_reads([p("holding", 0), p("holding", 2)])[0].has_gaps
