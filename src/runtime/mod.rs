//! Pipeline runner, HTTP server and shutdown.
