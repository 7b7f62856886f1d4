"""The core (≈ nginx's src/core): the clock, logging, reading the configuration, C-field
properties. It imports nothing from the layers above."""
