"""cmsRun exit codes: CMSSW's edm::errors 7000-9000. Our own descriptions."""

# ruff: noqa: E501 - a data table reads best one entry per line

from triage.kb import Action as A
from triage.kb import Category as C
from triage.kb import KbEntry, entry


def _c(code, symbol, category, transient, action, title, explanation="", generic=False):
    return entry("cmssw", code, symbol, category, transient, action, title, explanation, generic)


# fmt: off
_ROWS = [
    _c(7000, "CommandLineProcessing", C.CONFIG, False, A.FIX_CONFIG, "Bad cmsRun command line",
       "cmsRun could not make sense of its command-line arguments."),
    _c(7001, "ConfigFileNotFound", C.CONFIG, False, A.FIX_CONFIG, "Configuration file not found",
       "The python configuration given to cmsRun does not exist in the job's directory."),
    _c(7002, "ConfigFileReadError", C.CONFIG, False, A.FIX_CONFIG, "Configuration file unreadable",
       "The python configuration could not be read or failed while being evaluated."),
    _c(8001, "OtherCMS", C.SOFTWARE, False, A.INVESTIGATE, "CMSSW exception (other)",
       "A CMSSW exception without a more specific category.", generic=True),
    _c(8002, "StdException", C.SOFTWARE, False, A.FIX_SOFTWARE, "C++ standard exception in cmsRun",
       "A std::exception other than an allocation failure reached the framework.", generic=True),
    _c(8003, "Unknown", C.SOFTWARE, False, A.FIX_SOFTWARE, "Unknown exception in cmsRun",
       "An exception of unknown type reached the framework.", generic=True),
    _c(8004, "BadAlloc", C.RESOURCE, False, A.MORE_MEMORY, "Memory allocation failed (cmsRun)",
       "std::bad_alloc: the job ran out of the memory it may use."),
    _c(8005, "BadExceptionType", C.SOFTWARE, False, A.FIX_SOFTWARE, "Bad exception type (cmsRun)",
       "Code threw something that is not a proper exception (a string, say)."),
    _c(8006, "ProductNotFound", C.CONFIG, False, A.FIX_CONFIG, "Data product not found (cmsRun)",
       "A module asked for a product the event does not hold: wrong input or wrong input tag."),
    _c(8007, "DictionaryNotFound", C.CONFIG, False, A.FIX_CONFIG, "ROOT dictionary missing (cmsRun)",
       "No dictionary for a stored type; usually a release mismatch."),
    _c(8008, "InsertFailure", C.SOFTWARE, False, A.FIX_SOFTWARE, "Insert failed (cmsRun)",
       "Storing an item (a product, a record) failed."),
    _c(8009, "Configuration", C.CONFIG, False, A.FIX_CONFIG, "Configuration error (cmsRun)",
       "The cmsRun configuration is invalid: a missing or wrong parameter or module."),
    _c(8010, "LogicError", C.SOFTWARE, False, A.FIX_SOFTWARE, "Logic error (cmsRun)",
       "The code detected a state that should be impossible."),
    _c(8011, "UnimplementedFeature", C.SOFTWARE, False, A.FIX_SOFTWARE, "Unimplemented feature (cmsRun)",
       "The job used a feature that is not implemented."),
    _c(8012, "InvalidReference", C.SOFTWARE, False, A.FIX_SOFTWARE, "Invalid reference (cmsRun)",
       "A reference or handle was used while invalid."),
    _c(8013, "NullPointerError", C.SOFTWARE, False, A.FIX_SOFTWARE, "Null pointer (cmsRun)",
       "A null pointer was dereferenced and caught."),
    _c(8014, "NoProductSpecified", C.CONFIG, False, A.FIX_CONFIG, "No product specified (cmsRun)",
       "A request for a product did not say which one."),
    _c(8015, "EventTimeout", C.RESOURCE, False, A.MORE_TIME, "Event processing timed out (cmsRun)",
       "One event took longer to process than allowed."),
    _c(8016, "EventCorruption", C.INPUT, False, A.CHECK_INPUT, "Corrupt event (cmsRun)",
       "An event read from the input is damaged or inconsistent."),
    _c(8017, "ScheduleExecutionFailure", C.SOFTWARE, False, A.FIX_SOFTWARE, "Schedule execution failed (cmsRun)",
       "Running the modules of a path failed."),
    _c(8018, "EventProcessorFailure", C.SOFTWARE, False, A.FIX_SOFTWARE, "Event processor failed (cmsRun)",
       "The framework's event loop failed."),
    _c(8019, "FileInPathError", C.CONFIG, False, A.FIX_CONFIG, "File not found in search path (cmsRun)",
       "A data file the release should provide (via CMSSW_SEARCH_PATH) is missing."),
    _c(8020, "FileOpenError", C.SITE, True, A.CHECK_STORAGE, "Could not open input file (cmsRun)",
       "An input file could not be opened; most often the site's storage or its file "
       "catalog mapping is at fault."),
    _c(8021, "FileReadError", C.INPUT, True, A.CHECK_STORAGE, "Could not read input file (cmsRun)",
       "Reading an opened input file failed part-way, from storage or network trouble or "
       "a damaged file."),
    _c(8022, "FatalRootError", C.INPUT, False, A.CHECK_INPUT, "Fatal ROOT error (cmsRun)",
       "ROOT hit an unrecoverable error, usually a damaged or truncated file."),
    _c(8023, "MismatchedInputFiles", C.INPUT, False, A.CHECK_INPUT, "Input files do not match (cmsRun)",
       "The inputs of one job cannot be combined."),
    _c(8024, "ProductDoesNotSupportViews", C.SOFTWARE, False, A.FIX_SOFTWARE,
       "Product does not support views (cmsRun)", "A product was read as a view it cannot offer."),
    _c(8025, "ProductDoesNotSupportPtr", C.SOFTWARE, False, A.FIX_SOFTWARE,
       "Product does not support Ptr (cmsRun)", "A product was referenced through edm::Ptr unsupportedly."),
    _c(8026, "NotFound", C.CONFIG, False, A.FIX_CONFIG, "Something not found (cmsRun)",
       "An item that is neither a product nor a dictionary was not found."),
    _c(8027, "FormatIncompatibility", C.INPUT, False, A.CHECK_INPUT, "Incompatible file format (cmsRun)",
       "The input file was written in a format this release cannot read."),
    _c(8028, "FallbackFileOpenError", C.SITE, True, A.CHECK_STORAGE, "Input unreadable locally and via fallback",
       "Opening the input failed at the site and again through the remote fallback."),
    _c(8029, "NoSecondaryFiles", C.CONFIG, False, A.FIX_CONFIG, "No secondary input files (cmsRun)",
       "The configuration names a secondary (e.g. pile-up) source with no files."),
    _c(8030, "ExceededResourceVSize", C.RESOURCE, False, A.MORE_MEMORY, "Virtual memory limit exceeded (cmsRun)",
       "cmsRun stopped itself for using more virtual memory than allowed."),
    _c(8031, "ExceededResourceRSS", C.RESOURCE, False, A.MORE_MEMORY, "Resident memory limit exceeded (cmsRun)",
       "cmsRun stopped itself for using more resident memory (RSS) than allowed."),
    _c(8032, "ExceededResourceTime", C.RESOURCE, False, A.MORE_TIME, "Time limit exceeded (cmsRun)",
       "cmsRun stopped itself for running longer than allowed."),
    _c(8033, "FileWriteError", C.SITE, True, A.RETRY_ELSEWHERE, "Could not write output file (cmsRun)",
       "Writing an output file failed, usually a full or failing local disk."),
    _c(8034, "FileNameInconsistentWithGUID", C.INPUT, False, A.CHECK_INPUT, "File name does not match its GUID",
       "A file's name and the identifier stored inside it disagree."),
    _c(8035, "UnavailableAccelerator", C.SITE, True, A.RETRY_ELSEWHERE, "Accelerator unavailable (cmsRun)",
       "The job needs a GPU or other accelerator the node does not provide."),
    _c(8036, "ExternalFailure", C.SOFTWARE, False, A.INVESTIGATE, "External program failed (cmsRun)",
       "A program or library outside CMSSW that the job relies on failed."),
    _c(8501, "EventGenerationFailure", C.SOFTWARE, True, A.RETRY, "Event generation failed (cmsRun)",
       "The event generator failed; a retry with another random seed often gets past it."),
    _c(8901, "UnexpectedJobTermination", C.UNKNOWN, True, A.RETRY, "Job ended unexpectedly (cmsRun)",
       "cmsRun stopped without going through its normal end."),
    _c(9000, "CaughtSignal", C.SITE, True, A.RETRY, "cmsRun received a stop signal",
       "cmsRun caught an interrupt or user signal, normally sent by the batch system."),
]
# fmt: on

TABLE: dict[int, KbEntry] = {row.code: row for row in _ROWS}
