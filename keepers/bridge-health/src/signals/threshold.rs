//! Threshold checks shared by the signal kinds' configurations (TVL, peg), below both them and
//! `spec`, which lists them.

use keeper_runtime::config::ConfigError;

/// Checks a percentage pair `degraded < critical`, both finite and positive.
pub fn check_thresholds(
    path: &str,
    degraded_key: &str,
    degraded: f64,
    critical_key: &str,
    critical: Option<f64>,
) -> Result<(), ConfigError> {
    if !(degraded.is_finite() && degraded > 0.0) {
        return Err(ConfigError::new(
            format!("{path}.{degraded_key}"),
            "must be a positive number",
        ));
    }
    if let Some(c) = critical {
        if !(c.is_finite() && c > 0.0) {
            return Err(ConfigError::new(
                format!("{path}.{critical_key}"),
                "must be a positive number",
            ));
        }
        if c < degraded {
            return Err(ConfigError::new(
                format!("{path}.{critical_key}"),
                format!("{c} is below {degraded_key} ({degraded})"),
            ));
        }
    }
    Ok(())
}
