telemetry {}
telemetry {}
