"""Shared types of Bafang: readings, the devices.yaml models, the metric vocabulary and the clock."""
