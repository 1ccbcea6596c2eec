"""On-policy RL: PPO (critic + GAE), GRPO / Dr. GRPO and RLOO over multi-turn, tool-masked rollouts."""
