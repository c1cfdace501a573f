"""Media ingest: an uploaded audio file (or cover image) becomes a catalogue track's media.

This package holds the media steps as plain functions over local files, bytes and Pillow
images, with no database, queue or settings read inside them (values such as the size
limit and the thumbnail sizes arrive as arguments), so the pipeline that records each
step and the tests can both call them directly:

- ``tags``: what mutagen reads from a file: title, artist, album, genre, date, track
  number, and the embedded cover art (ID3 APIC, FLAC pictures, Vorbis pictures);
- ``probe``: the first step: what kind of file this is (``audio`` or ``image``), its
  format and stream, or a refusal (``IngestRefusedError``) with a one-line reason;
- ``analysis``: the existing audio analysis on an excerpt, and the waveform envelope in a
  single streaming pass, so a 60-minute file never sits whole in memory;
- ``images``: the waveform PNG, the cover thumbnails (or a generated placeholder) and the
  share card, with Pillow.
"""
