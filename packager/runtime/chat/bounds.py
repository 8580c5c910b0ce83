"""The numeric bounds of chat templates, in one place: what one render may spend (``Budget``),
what compiling a template may cost (``folding``), and the limits of the filters, methods and
globals whose cost could outgrow their inputs. Each says why it is what it is."""

from __future__ import annotations

# --- one render's budget (budget.Budget.for_input) ---------------------------------------------
ITERATIONS = 100_000  # plus four per character of the conversation
SECONDS = 2.0  # plus a second per million characters, of the rendering thread's CPU time (see budget._clock)
WALL_FACTOR = 5  # a render's wall-clock ceiling, in CPU deadlines: only a starved or stopped render gets there
BASE_CHARS = 1 << 20  # plus four per character
INT_BITS = 4096  # integers a template makes; no chat template needs more

# --- compiling (sandbox.compile_template, folding) ---------------------------------------------
SOURCE_CHARS = 1 << 20  # a template's source; real ones are a few kB
BLOCK_NESTING = 16  # blocks inside blocks; Python compiles at most 20 nested loops; shipped templates reach 7
EXPRESSION_DEPTH = 48  # levels of one expression's syntax tree, as counted here; shipped templates reach 17
BRACKET_NESTING = 16  # brackets inside brackets (shipped templates reach 3): jinja2's parser recurses ~15 calls each
LITERAL_DIGITS = 100  # Python refuses to convert integers of more than 4300 digits; jinja2 would crash
FOLDED_CHARS = BASE_CHARS  # all the constants jinja2 folds, together (see budget.deep_size)

# --- globals, filters and methods (template_globals, filters) ----------------------------------
MAX_RANGE = 100_000  # jinja2.sandbox.MAX_RANGE: the reference's range refuses more
STRIP_CHARS = 64  # the characters strip, lstrip, rstrip and trim may strip: each is tested against all
URLIZE_WORD = 64  # the longest word urlize takes: its time grows with each word's square
URLIZE_PIECE = 1 << 14  # urlize runs on pieces of this many characters, the deadline checked between them
WRAP_RUN = 1000  # the longest word or space wordwrap takes: textwrap slices it anew for every line it fills
PPRINT_NESTING = 16  # pprint formats every level's contents again for the level above
# wordwrap and pprint cost several microseconds a character, more than the deadline's one a
# character allows for an input: each takes at most this much, so one call ends within the deadline
SLOW_FILTER_CHARS = 1 << 16
ROUND_DIGITS = 1000  # round's precision: an integer's rounding makes 10 ** precision
