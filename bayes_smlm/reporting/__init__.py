"""What the study reports share: provenance and Markdown tables (:mod:`.markdown`), matplotlib
figures (:mod:`.figures`)."""
