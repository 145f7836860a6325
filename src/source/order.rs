//! Orders tables parents before children along foreign keys, so that a
//! restore can load them in file order.

use std::collections::{BTreeMap, BTreeSet};

use super::TableSchema;

/// Sorts `tables` so every table comes after the tables it references.
/// Self-references are ignored; cycles are broken by name order.
pub fn parents_first(mut tables: Vec<TableSchema>) -> Vec<TableSchema> {
    tables.sort_by_key(|a| (a.schema.clone(), a.name.clone()));
    let key = |schema: &str, name: &str| (schema.to_string(), name.to_string());
    let index: BTreeMap<(String, String), usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| (key(&t.schema, &t.name), i))
        .collect();
    let parents: Vec<BTreeSet<usize>> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.foreign_keys
                .iter()
                .filter_map(|fk| index.get(&key(&fk.references_schema, &fk.references_table)))
                .copied()
                .filter(|&p| p != i)
                .collect()
        })
        .collect();
    let mut placed = vec![false; tables.len()];
    let mut order = Vec::with_capacity(tables.len());
    while order.len() < tables.len() {
        // The first unplaced table whose parents are all placed; on a cycle, the first unplaced.
        let next = (0..tables.len())
            .find(|&i| !placed[i] && parents[i].iter().all(|&p| placed[p]))
            .or_else(|| (0..tables.len()).find(|&i| !placed[i]));
        let Some(i) = next else { break };
        placed[i] = true;
        order.push(i);
    }
    let mut slots: Vec<Option<TableSchema>> = tables.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ForeignKey;

    fn table(name: &str, refs: &[&str]) -> TableSchema {
        TableSchema {
            schema: "public".into(),
            name: name.into(),
            columns: vec![],
            primary_key: vec![],
            foreign_keys: refs
                .iter()
                .map(|r| ForeignKey {
                    columns: vec![],
                    references_schema: "public".into(),
                    references_table: r.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn parents_come_first() {
        let sorted = parents_first(vec![
            table("Repayment", &["Loan"]),
            table("Loan", &["User", "LoanType"]),
            table("User", &["User"]),
            table("LoanType", &[]),
        ]);
        let names: Vec<_> = sorted.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["LoanType", "User", "Loan", "Repayment"]);
    }

    #[test]
    fn cycles_do_not_lose_tables() {
        let sorted = parents_first(vec![table("A", &["B"]), table("B", &["A"])]);
        assert_eq!(sorted.len(), 2);
    }
}
