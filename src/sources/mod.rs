//! Sources: webhook ingest, one file per store source.
