"""granite-tuner: async, typed prompt tuning for IBM Granite models."""

__version__ = "0.1.0"
