-- Order changes after booking: the canonical shipment JSON each booking
-- key was claimed with, so a later event of the order can be compared with
-- what the courier has; and the last change handled without a new booking
-- (sent to review or ignored), with the message that handled it, so the
-- same change is not reported again by every later event of the order.
ALTER TABLE bookings ADD COLUMN shipment TEXT;
ALTER TABLE bookings ADD COLUMN change_seen TEXT;
ALTER TABLE bookings ADD COLUMN change_message_id TEXT;
