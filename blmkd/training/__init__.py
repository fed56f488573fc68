"""Training: the loop (:mod:`.loop`), its settings and objectives (:mod:`.config`), evaluation of a
model on a split (:mod:`.evaluation`), the weight average (:mod:`.ema`) and run summaries
(:mod:`.summary`)."""
