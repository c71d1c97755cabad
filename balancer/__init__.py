"""Envoy in front of the workers: bootstrap rendering (``envoy_config``) and ``tensorgate up``
(``supervisor``). See docs/balancer.md."""
