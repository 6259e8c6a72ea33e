"""SSH access to the hub: ``authorized_keys`` tooling, the forced command
(``tether ssh-serve``) and the frame protocol spoken over the channel."""
