"""Store, retrieve, search, context, handoffs and stats through the gateway and the worker, with
the hotset on Redis Cluster (the same tests as on one server)."""

from tests.integration.gateway.test_gateway import (  # noqa: F401
    test_a_foreign_hotset_value_reads_as_absent_and_is_rewarmed_over,
    test_batch_per_item_results,
    test_context_assembles_sections_in_prompt_order,
    test_delete_forgets,
    test_handoff_create_list_ack_exactly_once,
    test_health_ready_metrics_openapi_docs,
    test_hot_reads_answer_as_the_fastapi_routes_do,
    test_retrieve_falls_back_to_the_warehouse_and_rewarms,
    test_rewarm_never_overwrites_a_newer_version,
    test_search_finds_an_older_memory_holding_every_term_past_the_newest_postings,
    test_search_finds_words_of_any_script,
    test_search_prunes_expired_index_members,
    test_search_ranks_filters_and_respects_visibility,
    test_search_ranks_the_newer_of_the_hotset_and_warehouse_copies,
    test_stats,
    test_store_read_your_writes,
    test_the_same_handoff_to_two_agents_reaches_both,
)
