"""Notifications: a transactional outbox (notifications + deliveries), the bell, email and webhook."""
