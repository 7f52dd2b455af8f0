//! medic-actuator
