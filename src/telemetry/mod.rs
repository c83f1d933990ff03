//! Metrics registry and named events (one struct per occurrence: log + metric).
