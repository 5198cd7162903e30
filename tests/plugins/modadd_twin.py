"""Another package's trainer that shares the example's short name and config (for the identity test)."""

from toylab.modadd import ModularAddition

TRAINER = ModularAddition()
