//! A text table: columns two spaces apart, each as wide as its widest cell.

use crate::escape;

/// Column alignment in a [`Table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A text table: columns two spaces apart, each as wide as its widest cell, no trailing
/// blanks. A row shorter than the header leaves the remaining cells empty.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            header: columns.iter().map(|(name, _)| name.to_string()).collect(),
            align: columns.iter().map(|(_, align)| *align).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; a control character in a cell is written visibly ([`escape::visible`]).
    pub fn push(&mut self, row: Vec<String>) {
        let row = row
            .into_iter()
            .map(|cell| {
                if cell.chars().any(escape::unsafe_char) {
                    escape::visible(&cell)
                } else {
                    cell
                }
            })
            .collect();
        self.rows.push(row);
    }

    /// The column names.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The rows, each as long as the header or shorter.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// How column `column` is aligned (left past the last one).
    pub fn align(&self, column: usize) -> Align {
        self.align.get(column).copied().unwrap_or(Align::Left)
    }

    pub fn render(&self) -> String {
        let width =
            |row: &[String], column: usize| row.get(column).map_or(0, |cell| cell.chars().count());
        let widths: Vec<usize> = (0..self.header.len())
            .map(|column| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|row| width(row, column))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (column, &column_width) in widths.iter().enumerate() {
                let cell = row.get(column).map_or("", String::as_str);
                let pad = column_width - cell.chars().count();
                if column > 0 {
                    line.push_str("  ");
                }
                match self.align[column] {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_short_rows() {
        let mut table = Table::new(&[("A", Align::Left), ("BB", Align::Right)]);
        table.push(vec!["long".to_string(), "1".to_string()]);
        table.push(vec!["x".to_string()]);
        assert_eq!(table.render(), "A     BB\nlong   1\nx\n");
    }
}
