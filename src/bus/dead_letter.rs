//! Dead-letter envelopes: the original message plus `waybill-error-*` headers (DESIGN §10).
