# One image for every role (workers, beat, Flower, migrations); the command picks the role.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/var/lib/automation

RUN useradd --create-home --uid 10001 automation \
    && mkdir -p /var/lib/automation && chown automation /var/lib/automation
WORKDIR /app
COPY pyproject.toml README.md beat_schedule.py ./
COPY worker worker
COPY tasks tasks
COPY db db
RUN pip install .

USER automation
CMD ["automation", "--help"]
