//! Topic names of the demo system.

pub const ORDERS: &str = "orders";
pub const PAYMENTS: &str = "payments";
pub const INVENTORY: &str = "inventory";
pub const SHIPPING: &str = "shipping";
pub const ORDER_COMMANDS: &str = "orders.commands";
pub const PAYMENT_COMMANDS: &str = "payments.commands";
pub const INVENTORY_COMMANDS: &str = "inventory.commands";
pub const SHIPPING_COMMANDS: &str = "shipping.commands";
pub const DLQ: &str = "dlq";

/// Every topic the demo uses, events first.
pub const ALL: [&str; 9] = [
    ORDERS,
    PAYMENTS,
    INVENTORY,
    SHIPPING,
    ORDER_COMMANDS,
    PAYMENT_COMMANDS,
    INVENTORY_COMMANDS,
    SHIPPING_COMMANDS,
    DLQ,
];
