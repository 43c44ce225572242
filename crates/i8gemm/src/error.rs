use std::fmt;

/// Why a product could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A weight or input whose length is not a whole number of rows of
    /// the stated width, or a width of zero.
    Shape {
        /// How many values there are.
        len: usize,
        /// The row width they should divide into.
        width: usize,
    },
    /// A weight wider than [`crate::MAX_IN_DIM`] inputs, whose integer
    /// sums could overflow.
    TooWide {
        /// The weight's input width.
        in_dim: usize,
    },
    /// Rows or panels outside the operands, or an output slice of the
    /// wrong length.
    Range {
        /// What was out of range.
        what: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape { len, width } => {
                write!(f, "{len} values are not whole rows of width {width}")
            }
            Self::TooWide { in_dim } => write!(
                f,
                "input width {in_dim} is over {}, where int8 sums could overflow",
                crate::MAX_IN_DIM
            ),
            Self::Range { what } => write!(f, "{what} out of range"),
        }
    }
}

impl std::error::Error for Error {}
