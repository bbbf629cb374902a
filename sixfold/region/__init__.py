"""Secondary regions (issue 16): a replication agent per region, seeding, and the commands."""
