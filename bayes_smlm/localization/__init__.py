"""From KDE images to emitter lists: detection, one-to-one matching of point sets, metrics."""
