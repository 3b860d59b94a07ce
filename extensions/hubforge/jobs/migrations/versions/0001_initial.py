"""Jobs, runs and the scheduler lease (the first schema; JSON is stored as text).

Revision ID: 0001
Revises: 
Create Date: 2026-11-26
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('notebook_path', sa.Text(), nullable=False),
    sa.Column('notebook', sa.Text(), nullable=False),
    sa.Column('kernel', sa.String(length=255), nullable=False),
    sa.Column('notebook_parameters', sa.Text(), nullable=False),
    sa.Column('parameters', sa.Text(), nullable=False),
    sa.Column('profile', sa.String(length=255), nullable=False),
    sa.Column('trigger', sa.Text(), nullable=False),
    sa.Column('timeout', sa.Integer(), nullable=False),
    sa.Column('retries', sa.Integer(), nullable=False),
    sa.Column('retry_backoff', sa.Float(), nullable=False),
    sa.Column('missed', sa.String(length=16), nullable=False),
    sa.Column('notify', sa.Text(), nullable=True),
    sa.Column('retention', sa.Text(), nullable=False),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.Column('updated', sa.DateTime(), nullable=False),
    sa.Column('next_run_at', sa.DateTime(), nullable=True),
    sa.Column('watch_state', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('owner', 'name', name='uq_jobs_owner_name'),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_next_run_at'), ['next_run_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_owner'), ['owner'], unique=False)

    op.create_table('leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('trigger_key', sa.String(length=1024), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('parameters', sa.Text(), nullable=False),
    sa.Column('scheduled_for', sa.DateTime(), nullable=True),
    sa.Column('queued_at', sa.DateTime(), nullable=False),
    sa.Column('not_before', sa.DateTime(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('progress_cell', sa.Integer(), nullable=True),
    sa.Column('progress_cells', sa.Integer(), nullable=True),
    sa.Column('has_output', sa.Boolean(), nullable=False),
    sa.Column('retry_of', sa.Integer(), nullable=True),
    sa.Column('instance', sa.String(length=64), nullable=True),
    sa.Column('cancel_requested', sa.String(length=255), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('trigger_key', name='uq_runs_trigger_key'),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_runs_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_owner'), ['owner'], unique=False)
        batch_op.create_index(batch_op.f('ix_runs_status'), ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runs_status'))
        batch_op.drop_index(batch_op.f('ix_runs_owner'))
        batch_op.drop_index(batch_op.f('ix_runs_job_id'))

    op.drop_table('runs')
    op.drop_table('leases')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_owner'))
        batch_op.drop_index(batch_op.f('ix_jobs_next_run_at'))

    op.drop_table('jobs')
