"""Engine tuning: drift detection and recommendations from live metrics (pure)."""
