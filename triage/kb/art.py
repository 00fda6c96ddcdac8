"""art framework codes: art::errors 1-33 and art's own process exit codes.

When an art::Exception escapes, art exits with the exception's art::errors
code, so 1-33 are process exit codes too. art also returns 65-71, 88 and 91
from its main program, and 128+N after handling signal N when configured to
(see unix.py). Our own descriptions.
"""

# ruff: noqa: E501 - a data table reads best one entry per line

from triage.kb import Action as A
from triage.kb import Category as C
from triage.kb import KbEntry, entry


def _a(code, symbol, category, transient, action, title, explanation="", generic=False):
    return entry("art", code, symbol, category, transient, action, title, explanation, generic)


# fmt: off
_ROWS = [
    _a(1, "OtherArt", C.SOFTWARE, False, A.INVESTIGATE, "art exception (other)",
       "An art exception without a more specific category escaped, or art collected several "
       "exceptions and gave up; the log shows which.", generic=True),
    _a(2, "StdException", C.SOFTWARE, False, A.FIX_SOFTWARE, "C++ standard exception in art",
       "A std::exception thrown by a module or service reached the framework.", generic=True),
    _a(3, "Unknown", C.SOFTWARE, False, A.FIX_SOFTWARE, "Unknown exception in art",
       "Something that is not a recognised exception type was thrown.", generic=True),
    _a(4, "BadAlloc", C.RESOURCE, False, A.MORE_MEMORY, "Memory allocation failed (art)",
       "A memory allocation failed: the job ran out of the memory it may use."),
    _a(5, "BadExceptionType", C.SOFTWARE, False, A.FIX_SOFTWARE, "Bad exception type (art)",
       "Code threw something that is not a proper exception object."),
    _a(6, "ProductNotFound", C.CONFIG, False, A.FIX_CONFIG, "Data product not found (art)",
       "A module asked for a data product that is not in the event: the input file lacks it "
       "or the configuration names the wrong module label or instance."),
    _a(7, "DictionaryNotFound", C.CONFIG, False, A.FIX_CONFIG, "ROOT dictionary missing (art)",
       "No ROOT dictionary for a stored type: the release does not match the input file, or "
       "a library is missing from the setup."),
    _a(8, "ProductPutFailure", C.SOFTWARE, False, A.FIX_SOFTWARE, "Could not store data product (art)",
       "A module failed to put a product into the event (e.g. twice, or undeclared)."),
    _a(9, "Configuration", C.CONFIG, False, A.FIX_CONFIG, "Configuration error (art)",
       "The FHiCL configuration is invalid: a missing or misspelled parameter or module."),
    _a(10, "LogicError", C.SOFTWARE, False, A.FIX_SOFTWARE, "Logic error (art)",
       "The code detected a state that should be impossible."),
    _a(11, "UnimplementedFeature", C.SOFTWARE, False, A.FIX_SOFTWARE, "Unimplemented feature (art)",
       "The job used a feature the framework or a module does not implement."),
    _a(12, "InvalidReference", C.SOFTWARE, False, A.FIX_SOFTWARE, "Invalid reference (art)",
       "A handle or pointer to a product was used while invalid."),
    _a(13, "TypeConversion", C.CONFIG, False, A.FIX_CONFIG, "Type conversion failed (art)",
       "A value could not be converted to the requested type, often a FHiCL parameter of "
       "the wrong type."),
    _a(14, "NullPointerError", C.SOFTWARE, False, A.FIX_SOFTWARE, "Null pointer (art)",
       "Code dereferenced a null pointer that the framework caught."),
    _a(15, "EventTimeout", C.RESOURCE, False, A.MORE_TIME, "Event processing timed out (art)",
       "Processing one event took longer than allowed."),
    _a(16, "DataCorruption", C.INPUT, False, A.CHECK_INPUT, "Corrupt data (art)",
       "Data read from the input is inconsistent or damaged."),
    _a(17, "ScheduleExecutionFailure", C.SOFTWARE, False, A.FIX_SOFTWARE, "Schedule execution failed (art)",
       "Running the path of modules for an event failed."),
    _a(18, "EventProcessorFailure", C.SOFTWARE, False, A.FIX_SOFTWARE, "Event processor failed (art)",
       "The framework's event loop failed."),
    _a(19, "EndJobFailure", C.SOFTWARE, False, A.FIX_SOFTWARE, "Failure at end of job (art)",
       "A module or service failed while finishing the job, after the events were processed."),
    _a(20, "FileOpenError", C.INPUT, True, A.CHECK_STORAGE, "Could not open a file (art)",
       "An input (or output) file could not be opened: it does not exist, the storage is "
       "unreachable, or access was refused."),
    _a(21, "FileReadError", C.INPUT, True, A.CHECK_STORAGE, "Could not read a file (art)",
       "Reading an open file failed part-way, from a storage or network problem or damage."),
    _a(22, "FatalRootError", C.INPUT, False, A.CHECK_INPUT, "Fatal ROOT error (art)",
       "ROOT reported an error it cannot recover from, usually a damaged or truncated file."),
    _a(23, "MismatchedInputFiles", C.INPUT, False, A.CHECK_INPUT, "Input files do not match (art)",
       "The input files of one job cannot be read together (different content or layout)."),
    _a(24, "CatalogServiceError", C.SITE, True, A.RETRY, "File catalog service error (art)",
       "The file catalog or delivery service (e.g. SAM) failed to answer."),
    _a(25, "ProductDoesNotSupportViews", C.SOFTWARE, False, A.FIX_SOFTWARE,
       "Product does not support views (art)", "A product was read as a view it cannot offer."),
    _a(26, "ProductDoesNotSupportPtr", C.SOFTWARE, False, A.FIX_SOFTWARE,
       "Product does not support Ptr (art)", "A product was referenced through art::Ptr unsupportedly."),
    _a(27, "SQLExecutionError", C.SITE, True, A.RETRY, "Database query failed (art)",
       "An SQL statement failed, e.g. a conditions database that is down or locked."),
    _a(28, "InvalidNumber", C.CONFIG, False, A.FIX_CONFIG, "Invalid number (art)",
       "A value that should be a number is not one."),
    _a(29, "NotFound", C.CONFIG, False, A.FIX_CONFIG, "Something not found (art)",
       "A file, plugin or other item the job needs was not found."),
    _a(30, "ServiceNotFound", C.CONFIG, False, A.FIX_CONFIG, "Service not found (art)",
       "A module needs an art service that the configuration does not load."),
    _a(31, "ProductCannotBeAggregated", C.SOFTWARE, False, A.FIX_SOFTWARE,
       "Product cannot be aggregated (art)", "Products from several inputs could not be combined."),
    _a(32, "ProductRegistrationFailure", C.SOFTWARE, False, A.FIX_SOFTWARE,
       "Product registration failed (art)", "A module's products could not be registered."),
    _a(33, "EventRangeOverlap", C.INPUT, False, A.CHECK_INPUT, "Event ranges overlap (art)",
       "The inputs hold overlapping event ranges, e.g. the same file given twice."),
    _a(65, "", C.CONFIG, False, A.FIX_CONFIG, "Non-art exception while configuring or running (art exit 65)",
       "art caught an exception from its support libraries (cetlib, FHiCL), most often while "
       "reading and checking the configuration."),
    _a(66, "", C.SOFTWARE, False, A.FIX_SOFTWARE, "C++ standard exception (art exit 66)",
       "art caught a std::exception while configuring or running.", generic=True),
    _a(67, "", C.SOFTWARE, False, A.FIX_SOFTWARE, "Unknown exception (art exit 67)",
       "art caught an exception of unknown type while configuring or running.", generic=True),
    _a(68, "", C.RESOURCE, False, A.MORE_MEMORY, "Out of memory (art exit 68)",
       "art caught std::bad_alloc: the job most likely used up the memory it may use."),
    _a(69, "", C.CONFIG, False, A.FIX_CONFIG, "Message logger setup failed (art exit 69)",
       "Starting the message facility failed on its configuration (services.message)."),
    _a(70, "", C.CONFIG, False, A.FIX_CONFIG, "Message logger setup failed (art exit 70)",
       "Starting the message facility failed with a standard exception."),
    _a(71, "", C.CONFIG, False, A.FIX_CONFIG, "Message logger setup failed (art exit 71)",
       "Starting the message facility failed with an unknown exception."),
    _a(88, "", C.CONFIG, False, A.FIX_CONFIG, "Bad command line (art exit 88)",
       "art could not parse its command-line options."),
    _a(91, "", C.CONFIG, False, A.FIX_CONFIG, "Invalid FHiCL configuration (art exit 91)",
       "The configuration file parsed, but a parameter set could not be built from it."),
]
# fmt: on

TABLE: dict[int, KbEntry] = {row.code: row for row in _ROWS}
