"""The eight protections (八防): one module per protection, the engine, the alert lifecycle, climate maths."""
