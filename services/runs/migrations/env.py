"""Alembic environment: runs on the connection the run store hands over (`services.runs.migrate`)."""

from alembic import context

from services.runs.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("the run store migrates itself at start-up; run the gateway (or `lmstudio-bridge check`)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
