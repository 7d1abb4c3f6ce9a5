"""training: the thin layer that trains one network with backprop or one of its
approximations (synthetic gradients, DFA, FA, ...) and writes checkpoints for repsim."""
