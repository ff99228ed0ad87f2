"""The analyses: gradients, signatures, ablation, speech, decay."""
