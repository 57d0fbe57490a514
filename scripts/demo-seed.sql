-- A small demo: suppliers, a batch in every orchestrate tier, a few orders.
-- Windows are relative to now(), so the demo reads the same whenever it runs.
-- Used by `make demo` and the end-to-end test on a fresh, migrated database.

INSERT INTO suppliers (id, company_name, contact_email) VALUES
    ('5a000000-0000-4000-8000-000000000001', 'Dhaka Knitwear Ltd', 'orders@dhaka-knit.example.com'),
    ('5a000000-0000-4000-8000-000000000002', 'Premium Cotton Co', 'sales@premium-cotton.example.com'),
    ('5a000000-0000-4000-8000-000000000003', 'Cheap But Suspended', 'info@suspended.example.com');

INSERT INTO supplier_mou_terms (supplier_id, tier, moq_per_batch, max_styles_allowed, base_price,
                                complexity_premium_percent, lead_time_days, status) VALUES
    ('5a000000-0000-4000-8000-000000000001', 'standard', 200, 4, 8.50, 5.00, 14, 'active'),
    ('5a000000-0000-4000-8000-000000000002', 'premium', 300, 6, 12.00, 7.50, 21, 'active'),
    ('5a000000-0000-4000-8000-000000000003', 'standard', 500, 4, 5.00, 5.00, 7, 'suspended');

-- B1 confirm (80 %, closed) · B2 needs_review (60 %, closed) · B3 cancel (40 %, closed)
-- B4 nearing_target (65 %, open 6 h) · B5 quiet (10 %, open 20 h) · B6 skipped (target 0)
-- B7 needs_review (55 %, closed)
INSERT INTO production_batches (id, product_category, product_variant_base, target_quantity, current_quantity,
                                current_style_count, max_styles, supplier_id, unit_price_base, window_closes_at)
VALUES
    ('ba000000-0000-4000-8000-000000000001', 'hoodies', 'pullover', 200, 160, 1, 4,
     '5a000000-0000-4000-8000-000000000001', 8.50, now() - interval '2 hours'),
    ('ba000000-0000-4000-8000-000000000002', 'caps', 'snapback', 200, 120, 1, 4,
     '5a000000-0000-4000-8000-000000000001', 8.50, now() - interval '3 hours'),
    ('ba000000-0000-4000-8000-000000000003', 'tote-bags', 'canvas', 200, 80, 1, 4,
     '5a000000-0000-4000-8000-000000000001', 8.50, now() - interval '1 hour'),
    ('ba000000-0000-4000-8000-000000000004', 't-shirts', 'crew-neck', 200, 130, 1, 4,
     '5a000000-0000-4000-8000-000000000001', 8.50, now() + interval '6 hours'),
    ('ba000000-0000-4000-8000-000000000005', 'polo-shirts', 'pique', 300, 30, 1, 6,
     '5a000000-0000-4000-8000-000000000002', 12.00, now() + interval '20 hours'),
    ('ba000000-0000-4000-8000-000000000006', 'socks', 'crew', 0, 10, 1, 4,
     '5a000000-0000-4000-8000-000000000001', 8.50, now() - interval '30 minutes'),
    ('ba000000-0000-4000-8000-000000000007', 'jackets', 'bomber', 300, 165, 1, 6,
     '5a000000-0000-4000-8000-000000000002', 12.00, now() - interval '4 hours');

INSERT INTO orders (id, order_number, buyer_id, product_type, quantity, status, workflow_status,
                    payment_status, buyer_price, supplier_price) VALUES
    ('0d000000-0000-4000-8000-000000000001', 'BO-DEMO-0001', 'aaaaaaaa-0000-4000-8000-000000000002',
     'hoodies', 160, 'confirmed', 'payment_received', 'paid', 1700.80, 1360.00),
    ('0d000000-0000-4000-8000-000000000002', 'BO-DEMO-0002', 'aaaaaaaa-0000-4000-8000-000000000003',
     'caps', 120, 'pending', 'awaiting_payment', 'partial', 1275.60, 1020.00),
    ('0d000000-0000-4000-8000-000000000003', 'BO-DEMO-0003', 'aaaaaaaa-0000-4000-8000-000000000002',
     'tote-bags', 50, 'confirmed', 'payment_received', 'paid', 531.50, 425.00),
    ('0d000000-0000-4000-8000-000000000004', 'BO-DEMO-0004', 'aaaaaaaa-0000-4000-8000-000000000004',
     'tote-bags', 30, 'pending', 'awaiting_payment', 'pending', 306.00, 255.00),
    ('0d000000-0000-4000-8000-000000000005', 'BO-DEMO-0005', 'aaaaaaaa-0000-4000-8000-000000000003',
     't-shirts', 130, 'pending', 'awaiting_payment', 'pending', 1326.00, 1105.00),
    ('0d000000-0000-4000-8000-000000000006', 'BO-DEMO-0006', 'aaaaaaaa-0000-4000-8000-000000000004',
     'jackets', 165, 'confirmed', 'payment_received', 'paid', 2970.00, 1980.00);

INSERT INTO batch_contributions (batch_id, order_id, quantity, style_details, buyer_price_per_unit,
                                 contribution_margin) VALUES
    ('ba000000-0000-4000-8000-000000000001', '0d000000-0000-4000-8000-000000000001', 160,
     '{"variant": "black-l"}', 10.63, 340.80),
    ('ba000000-0000-4000-8000-000000000002', '0d000000-0000-4000-8000-000000000002', 120,
     '{"variant": "red-os"}', 10.63, 255.60),
    ('ba000000-0000-4000-8000-000000000003', '0d000000-0000-4000-8000-000000000003', 50,
     '{"variant": "natural"}', 10.63, 106.50),
    ('ba000000-0000-4000-8000-000000000003', '0d000000-0000-4000-8000-000000000004', 30,
     '{"variant": "black"}', 10.20, 51.00),
    ('ba000000-0000-4000-8000-000000000004', '0d000000-0000-4000-8000-000000000005', 130,
     '{"variant": "white-l"}', 10.20, 221.00),
    ('ba000000-0000-4000-8000-000000000007', '0d000000-0000-4000-8000-000000000006', 165,
     '{"variant": "olive-m"}', 18.00, 990.00);
