//! End-to-end harness for kafka-medic.
