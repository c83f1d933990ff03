-- The COD ledger (DESIGN §9): each shipment's COD state beside its delivery
-- status, what the courier collected and what it paid the merchant.
-- Amounts are decimal text, timestamps fixed-width RFC 3339 UTC text
-- (remitted_at as the courier wrote it).

ALTER TABLE shipments ADD COLUMN cod_state TEXT NOT NULL DEFAULT 'not_applicable';
ALTER TABLE shipments ADD COLUMN cod_collected_at TEXT;
ALTER TABLE shipments ADD COLUMN cod_remitted TEXT;
ALTER TABLE shipments ADD COLUMN cod_remitted_at TEXT;
ALTER TABLE shipments ADD COLUMN cod_remittance_ref TEXT;
ALTER TABLE shipments ADD COLUMN cod_fees TEXT;
ALTER TABLE shipments ADD COLUMN cod_note TEXT;
ALTER TABLE shipments ADD COLUMN cod_next_check_at TEXT;

-- Shipments stored before the ledger: only those with an amount collect.
UPDATE shipments SET cod_state = CASE
        WHEN status = 'delivered' THEN 'collected'
        WHEN status IN ('returned', 'cancelled') THEN 'not_collected'
        ELSE 'pending' END,
    cod_collected_at = CASE WHEN status = 'delivered' THEN last_event_at END
    WHERE cod_amount IS NOT NULL;

CREATE INDEX shipments_cod_due ON shipments (cod_state, cod_next_check_at);
