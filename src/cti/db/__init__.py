"""Persistence: SQLAlchemy models, async engine, alembic migrations and the batched call writer."""
