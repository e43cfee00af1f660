"""Dashboards served by the API: wall/ (the archive-room kiosk page) and, later, grafana/."""
