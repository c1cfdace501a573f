"""PostgreSQL: models, engine and sessions, migrations, synthetic data."""
