"""What the kit borrows from a user's model and optimizer for a run and gives
back: the optimizer's rate handle (``optimizer``), in-memory copies of the
training state (``snapshot``) and the weights a model is evaluated with
(``evaluated_weights``)."""
