"""The hotset's scripts and writer on Redis Cluster (the same tests as on one server)."""

from tests.integration.pipeline.test_hotset_format import (  # noqa: F401
    hotset,
    test_delete_writes_a_tombstone_an_older_version_cannot_undo,
    test_lua_writer_builds_the_layout,
    test_prune_spares_a_member_whose_memory_came_back,
    test_rewarm_keeps_the_superseded_marker_and_the_version_guard,
    test_supersession_marks_the_older_and_survives_its_new_versions,
)
from tests.integration.sinks.test_hotset_scripts import (  # noqa: F401
    client,
    test_a_script_reloads_after_the_cache_is_flushed,
    test_a_script_runs_in_a_pipeline_after_the_cache_is_flushed,
    test_every_script_compiles_on_the_server,
)
