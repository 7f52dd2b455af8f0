//! medic-agent
