-- eventscope demo order system (SQLite). Keep in step with ../postgres.

CREATE TABLE order_events (
    aggregate_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (aggregate_id, version)
);

CREATE TABLE order_snapshots (
    aggregate_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (aggregate_id, version)
);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    service TEXT NOT NULL,
    topic TEXT NOT NULL,
    msg_key TEXT NOT NULL,
    event_type TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT NOT NULL,
    correlation_id TEXT,
    causation_id TEXT,
    aggregate_version BIGINT,
    event_time TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    published_at BIGINT,
    publish_count BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX outbox_unpublished ON outbox (published_at, id);

CREATE TABLE processed_events (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE sagas (
    order_id TEXT PRIMARY KEY,
    correlation_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX sagas_phase ON sagas (phase);

CREATE TABLE payments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    command_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX payments_order ON payments (order_id);

CREATE TABLE stock (
    product_id TEXT PRIMARY KEY,
    quantity BIGINT NOT NULL,
    initial_quantity BIGINT NOT NULL
);

CREATE TABLE stock_movements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    command_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    delta BIGINT NOT NULL,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX stock_movements_order ON stock_movements (order_id);

CREATE TABLE shipments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    command_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX shipments_order ON shipments (order_id);

CREATE TABLE order_view (
    order_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    customer_email TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    item_count BIGINT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
