//! The world's members by id, in id order. A history has a handful of members and the world
//! looks one up about a dozen times per event; a `BTreeMap`'s search took about 5% of the
//! simulator's instructions, a scan of a few ids kept apart from the members costs a fraction
//! of it. Iteration is in id order, as the map's was, so histories are unchanged.

use std::ops::Index;

use detcd::node::MemberId;

pub(super) struct MemberTable<M> {
    /// Sorted; `members[i]` is the member of `ids[i]`.
    ids: Vec<MemberId>,
    members: Vec<M>,
}

impl<M> MemberTable<M> {
    pub fn new() -> MemberTable<M> {
        MemberTable {
            ids: Vec::new(),
            members: Vec::new(),
        }
    }

    fn position(&self, id: &MemberId) -> Option<usize> {
        self.ids.iter().position(|known| known == id)
    }

    pub fn get(&self, id: &MemberId) -> Option<&M> {
        self.position(id).map(|i| &self.members[i])
    }

    pub fn get_mut(&mut self, id: &MemberId) -> Option<&mut M> {
        self.position(id).map(|i| &mut self.members[i])
    }

    pub fn contains_key(&self, id: &MemberId) -> bool {
        self.position(id).is_some()
    }

    /// Adds or replaces the member of `id`; returns the one replaced.
    pub fn insert(&mut self, id: MemberId, member: M) -> Option<M> {
        match self.ids.binary_search(&id) {
            Ok(i) => Some(std::mem::replace(&mut self.members[i], member)),
            Err(i) => {
                self.ids.insert(i, id);
                self.members.insert(i, member);
                None
            }
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &MemberId> {
        self.ids.iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &M> {
        self.members.iter()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&MemberId, &M)> {
        self.ids.iter().zip(&self.members)
    }
}

impl<M> Index<&MemberId> for MemberTable<M> {
    type Output = M;

    fn index(&self, id: &MemberId) -> &M {
        self.get(id).expect("a member of the world")
    }
}

impl<'a, M> IntoIterator for &'a MemberTable<M> {
    type Item = (&'a MemberId, &'a M);
    type IntoIter = std::iter::Zip<std::slice::Iter<'a, MemberId>, std::slice::Iter<'a, M>>;

    fn into_iter(self) -> Self::IntoIter {
        self.ids.iter().zip(&self.members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_stay_in_id_order_through_inserts_and_replacements() {
        let mut table = MemberTable::new();
        assert_eq!(table.insert(7, "g"), None);
        assert_eq!(table.insert(2, "b"), None);
        assert_eq!(table.insert(0x9f00_0000_0000_0001, "z"), None);
        assert_eq!(table.insert(5, "e"), None);
        assert_eq!(table.insert(2, "B"), Some("b"));
        let all: Vec<(MemberId, &str)> = table.iter().map(|(id, m)| (*id, *m)).collect();
        assert_eq!(
            all,
            [(2, "B"), (5, "e"), (7, "g"), (0x9f00_0000_0000_0001, "z")]
        );
        assert_eq!(table[&5], "e");
        assert!(table.contains_key(&2) && !table.contains_key(&3));
        *table.get_mut(&5).unwrap() = "E";
        assert_eq!(
            table.values().copied().collect::<Vec<_>>(),
            ["B", "E", "g", "z"]
        );
        assert_eq!(table.keys().count(), 4);
    }
}
