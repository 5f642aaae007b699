"""Batch sources and sinks: CSV/TSV/Parquet files and stdin/stdout, with atomic commit.

Arrow record batches are the currency; this package knows nothing of normalization methods.
:mod:`.source` holds the interface every input offers, :mod:`.csv_source` and
:mod:`.parquet_source` the two kinds of input, :mod:`.inputs` the naming and opening of inputs,
:mod:`.sample` how the text of an input's sample reads as numbers, and :mod:`.sinks` the outputs.
"""
from .inputs import (InputFile, check_readable, discard, expand_inputs, fingerprint, input_entry, input_format, open_input,
                     open_source,
                     needs_spool, output_path, path_text, spool_input)
from .outfile import exclusive, is_special, parent_directories
from .sample import TextSample, text_samples
from .sinks import Sink, check_directory_outputs, check_outputs, file_keys, open_sink, same_file, stdout_file_keys
from .source import DEFAULT_BLOCK_SIZE, FORMATS, Piece, Source, detect_format, field_separator, format_of

__all__ = ["DEFAULT_BLOCK_SIZE", "FORMATS", "InputFile", "Piece", "Sink", "Source", "TextSample",
           "check_directory_outputs", "check_outputs", "check_readable",
           "detect_format", "discard", "exclusive", "expand_inputs", "field_separator", "file_keys", "fingerprint", "format_of", "input_entry", "input_format", "open_input",
           "is_special", "needs_spool", "open_sink", "open_source", "output_path", "parent_directories", "path_text", "same_file",
           "spool_input", "stdout_file_keys", "text_samples"]
