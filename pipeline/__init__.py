"""Training, evaluation, batch scoring, shipment decisions, the audit store and the CLI."""
