"""Our own exit-code tables: a real code of each family gets its right class."""

from triage import kb
from triage.classify import FailureFacts, classify_failure
from triage.kb import Category, htcondor


def classify(code=None, signal=None, lines=(), families=kb.DEFAULT_FAMILIES, job_type=""):
    facts = FailureFacts(
        exit_code=code, signal=signal, reported_success=None, families=families, job_type=job_type
    )
    return classify_failure(lines=list(lines), facts=facts)


def test_it_maps_137_to_sigkill():
    verdict = classify(code=137)
    assert verdict.key == "exit:unix:137"
    assert "SIGKILL" in verdict.spec.title
    assert verdict.spec.category == Category.RESOURCE


def test_it_maps_a_reported_signal_like_its_128_plus_n_exit_code():
    assert classify(code=None, signal=9).key == "exit:unix:137"
    assert classify(code=None, signal=7).key == "exit:unix:135"


def test_it_maps_art_65_to_configuration():
    verdict = classify(code=65, families=("art", "unix"))
    assert verdict.key == "exit:art:65"
    assert verdict.spec.category == Category.CONFIG
    assert verdict.spec.transient is False


def test_it_reads_65_as_wmcore_for_cmsrun_stages():
    # The same number means something else to CMS's wrapper: families decide.
    families = kb.families_for(job_type="cmsRun")
    assert families[0] == "cmssw"
    assert classify(code=65, families=families).key == "exit:wmcore:65"


def test_it_maps_cmssw_8021_to_input_data():
    verdict = classify(code=8021, families=("cmssw", "wmcore", "unix"))
    assert verdict.key == "exit:cmssw:8021"
    assert verdict.spec.category == Category.INPUT
    assert verdict.spec.transient is True


def test_it_finds_codes_above_255_outside_the_chosen_families():
    # An art experiment running a CMS wrapper still gets 50660 explained.
    verdict = classify(code=50660, families=("art", "unix"))
    assert verdict.key == "exit:wmcore:50660"
    assert verdict.spec.category == Category.RESOURCE


def test_it_never_borrows_small_codes_from_other_families():
    # 50 is "release missing" for WMCore; for an art job it means nothing known.
    assert kb.lookup_exit_code(50, ("art", "unix")) is None


def test_it_maps_panda_1098_to_no_local_space():
    verdict = classify(code=1098, families=("panda", "unix"))
    assert verdict.key == "exit:panda:1098"
    assert verdict.spec.category == Category.RESOURCE
    assert "space" in verdict.spec.title.lower()


def test_it_maps_wmcore_ranges_for_unlisted_codes():
    entry = kb.lookup_exit_code(60999, ("wmcore",))
    assert entry is not None
    assert entry.generic
    assert entry.category == Category.SITE


def test_it_reads_an_htcondor_hold_with_its_subcode_from_the_event_log():
    lines = [
        "012 (4711.000.000) 2025-03-01 10:00:00 Job was held.",
        "\tTransfer input files failure at execution point slot1@wn07 using protocol osdf.",
        "\tCode 13 Subcode 62",
        "...",
    ]
    verdict = classify(code=None, lines=lines)
    assert verdict.key == "htcondor-hold:13:62"
    assert verdict.line_index == 2
    assert verdict.spec.category == Category.SITE
    assert verdict.spec.transient is True
    assert "timed out" in verdict.spec.title


def test_it_reads_a_memory_hold_from_classad_attributes():
    lines = ["HoldReasonCode = 34", "HoldReasonSubCode = 102", "HoldReason = memory"]
    verdict = classify(code=None, lines=lines)
    assert verdict.key == "htcondor-hold:34:102"
    assert verdict.spec.category == Category.RESOURCE
    assert "request_memory" in verdict.spec.action


def test_it_decodes_plugin_exit_codes_and_errnos_in_hold_subcodes():
    assert "exited with 1" in htcondor.lookup_hold(13, 256).title
    assert "ENOENT" in htcondor.lookup_hold(13, 2).title
    assert htcondor.lookup_hold(13, 2).category == Category.INPUT
    assert htcondor.lookup_hold(99) is None


def test_it_covers_every_family_with_a_category_transient_flag_and_action():
    entries = kb.all_entries()
    assert len(entries) > 400
    for entry in entries:
        assert entry.category in Category.VALUES, entry
        assert isinstance(entry.transient, bool), entry
        assert entry.action, entry
        assert entry.title, entry


def test_it_lets_an_experiment_pick_families_per_job_type():
    families = kb.families_for(
        job_type="sim-panda", code_families=["unix"], job_type_families={"sim": ["panda"]}
    )
    assert families == ("panda",)
    assert kb.families_for(job_type="", code_families=["cmssw", "bogus"]) == ("cmssw",)
    assert kb.families_for() == kb.DEFAULT_FAMILIES
