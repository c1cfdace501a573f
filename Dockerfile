# One image for every role (workers, beat, Flower, migrations); the command picks the role.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/var/lib/automation

# /srv/ingest: the ingest bucket's volume in compose (a new volume takes the owner of
# the directory it is mounted on, so the unprivileged user can write it).
RUN useradd --create-home --uid 10001 automation \
    && mkdir -p /var/lib/automation /srv/ingest \
    && chown automation /var/lib/automation /srv/ingest
WORKDIR /app
COPY pyproject.toml README.md beat_schedule.py ./
COPY worker worker
COPY tasks tasks
COPY db db
RUN pip install .

USER automation
CMD ["automation", "--help"]
