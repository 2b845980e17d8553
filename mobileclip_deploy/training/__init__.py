"""Reinforced distillation: teachers' knowledge stored once in DataCompDR-layout shards (augment, records, reinforce), then distilled into a student (losses, batches, loop)."""
