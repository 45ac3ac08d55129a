//! Paper tests: one test per rule of Figure 2 and §5.

mod paper;
mod safety_predicates;
