"""The recall suite's tasks by config name (added to zoo.tasks.TASKS); each accepts ``read_twice``."""
from zoo.tasks.associative_recall import FuzzyRecallDataModule, NoisyRecallDataModule
from zoo.tasks.induction import InductionDataModule
from zoo.tasks.mqar_variants import CompositionalMQARDataModule, ForgettingMQARDataModule
from zoo.tasks.multi_hop import MultiHopDataModule
from zoo.tasks.selective_copy import SelectiveCopyDataModule
from zoo.tasks.set_disjointness import SetDisjointnessDataModule

SUITE_TASKS = {
    "selective_copy": SelectiveCopyDataModule,
    "induction": InductionDataModule,
    "noisy_recall": NoisyRecallDataModule,
    "fuzzy_recall": FuzzyRecallDataModule,
    "set_disjointness": SetDisjointnessDataModule,
    "multi_hop": MultiHopDataModule,
    "mqar_forgetting": ForgettingMQARDataModule,
    "mqar_compositional": CompositionalMQARDataModule,
}
