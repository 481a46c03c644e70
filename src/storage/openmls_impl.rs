//! `StorageProvider` for [`PoolStorage`]: every method is
//! `openmls_sqlite_storage`'s, except the two KeyPackage writes, which also
//! keep the pool's metadata row in the same transaction.

use openmls::prelude::KeyPackageBundle;
use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use openmls_traits::storage::{traits, StorageProvider, CURRENT_VERSION as V};
use rusqlite::Connection;

use super::PoolStorage;
use crate::{
    clock::unix_now,
    codec::transcode,
    error::{Error, Result},
    keypackage_ref::raw_ref_of,
    metadata::{self, PoolEntry},
    status::KeyPackageStatus,
};

impl<C: Codec> PoolStorage<C> {
    /// `openmls_sqlite_storage`'s provider as a view over this connection;
    /// free to make, so one is made per call.
    pub(super) fn delegate(&self) -> SqliteStorageProvider<C, &Connection> {
        SqliteStorageProvider::new(&self.conn)
    }

    /// Reads the facts of a metadata row from what OpenMLS passed to
    /// `write_key_package`.
    ///
    /// The trait hands over the ref and bundle as opaque `serde` values;
    /// OpenMLS only ever passes its own `KeyPackageRef` and
    /// `KeyPackageBundle`, so they are moved into those types through the
    /// storage codec.
    fn pool_entry_of(
        hash_ref: &impl traits::HashReference<V>,
        key_package: &impl traits::KeyPackage<V>,
    ) -> Result<PoolEntry> {
        let keypackage_ref = raw_ref_of::<C>(hash_ref)?;
        let bundle: KeyPackageBundle =
            transcode::<C, _>(key_package, "reading a KeyPackageBundle")?;
        PoolEntry::from_bundle(keypackage_ref, &bundle)
    }
}

/// Writes trait methods that forward to `openmls_sqlite_storage` and turn its
/// error into this crate's. In `atomic` mode the call runs in a write scope,
/// for methods that issue several statements which must land together.
macro_rules! delegate {
    (@call plain, $storage:ident, $call:expr) => {
        $call.map_err(Error::from)
    };
    (@call atomic, $storage:ident, $call:expr) => {{
        let scope = $storage.write_scope()?;
        let value = $call?;
        scope.commit()?;
        Ok(value)
    }};
    ($mode:ident; $(
        $(#[$attr:meta])*
        fn $name:ident<$($generic:ident: $bound:path),+ $(,)?>(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {$(
        $(#[$attr])*
        fn $name<$($generic: $bound),+>(&self $(, $arg: $ty)*) -> Result<$ret> {
            delegate!(@call $mode, self, self.delegate().$name::<$($generic),+>($($arg),*))
        }
    )*};
}

impl<C: Codec> StorageProvider<V> for PoolStorage<C> {
    type Error = Error;

    /// Stores the bundle and inserts its `created` metadata row in one
    /// transaction (a savepoint inside an open one): both are written, or
    /// neither.
    ///
    /// A bundle written again under a ref that already has a row keeps that
    /// row (the ref is a hash of the KeyPackage, so it is the same one).
    fn write_key_package<
        HashReference: traits::HashReference<V>,
        KeyPackage: traits::KeyPackage<V>,
    >(
        &self,
        hash_ref: &HashReference,
        key_package: &KeyPackage,
    ) -> Result<()> {
        let entry = Self::pool_entry_of(hash_ref, key_package)?;
        let written = (|| {
            let now = unix_now()?;
            let scope = self.write_scope()?;
            self.delegate().write_key_package(hash_ref, key_package)?;
            match metadata::insert(&self.conn, &entry, KeyPackageStatus::Created, now) {
                Ok(()) | Err(Error::DuplicateRef { .. }) => {}
                Err(e) => return Err(e),
            }
            scope.commit()
        })();
        if let Err(e) = &written {
            self.record_hook_failure(&entry.keypackage_ref, e);
        }
        written
    }

    /// Deletes the bundle and its metadata row in one transaction (a
    /// savepoint inside an open one). OpenMLS calls
    /// this when a Welcome consumes a KeyPackage (never for last-resort ones).
    fn delete_key_package<KeyPackageRef: traits::HashReference<V>>(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<()> {
        let keypackage_ref = raw_ref_of::<C>(hash_ref)?;
        let scope = self.write_scope()?;
        self.delegate().delete_key_package(hash_ref)?;
        // A bundle written before the pool managed this database has no row;
        // deleting it is still a success.
        metadata::delete(&self.conn, &keypackage_ref)?;
        scope.commit()
    }

    delegate! {
        plain;
        fn write_mls_join_config<
            GroupId: traits::GroupId<V>,
            MlsGroupJoinConfig: traits::MlsGroupJoinConfig<V>,
        >(&self, group_id: &GroupId, config: &MlsGroupJoinConfig) -> ();
        fn append_own_leaf_node<
            GroupId: traits::GroupId<V>,
            LeafNode: traits::LeafNode<V>,
        >(&self, group_id: &GroupId, leaf_node: &LeafNode) -> ();
        fn queue_proposal<
            GroupId: traits::GroupId<V>,
            ProposalRef: traits::ProposalRef<V>,
            QueuedProposal: traits::QueuedProposal<V>,
        >(&self, group_id: &GroupId, proposal_ref: &ProposalRef, proposal: &QueuedProposal) -> ();
        fn write_tree<
            GroupId: traits::GroupId<V>,
            TreeSync: traits::TreeSync<V>,
        >(&self, group_id: &GroupId, tree: &TreeSync) -> ();
        fn write_interim_transcript_hash<
            GroupId: traits::GroupId<V>,
            InterimTranscriptHash: traits::InterimTranscriptHash<V>,
        >(&self, group_id: &GroupId, interim_transcript_hash: &InterimTranscriptHash) -> ();
        fn write_context<
            GroupId: traits::GroupId<V>,
            GroupContext: traits::GroupContext<V>,
        >(&self, group_id: &GroupId, group_context: &GroupContext) -> ();
        fn write_confirmation_tag<
            GroupId: traits::GroupId<V>,
            ConfirmationTag: traits::ConfirmationTag<V>,
        >(&self, group_id: &GroupId, confirmation_tag: &ConfirmationTag) -> ();
        fn write_group_state<
            GroupState: traits::GroupState<V>,
            GroupId: traits::GroupId<V>,
        >(&self, group_id: &GroupId, group_state: &GroupState) -> ();
        fn write_message_secrets<
            GroupId: traits::GroupId<V>,
            MessageSecrets: traits::MessageSecrets<V>,
        >(&self, group_id: &GroupId, message_secrets: &MessageSecrets) -> ();
        fn write_resumption_psk_store<
            GroupId: traits::GroupId<V>,
            ResumptionPskStore: traits::ResumptionPskStore<V>,
        >(&self, group_id: &GroupId, resumption_psk_store: &ResumptionPskStore) -> ();
        fn write_own_leaf_index<
            GroupId: traits::GroupId<V>,
            LeafNodeIndex: traits::LeafNodeIndex<V>,
        >(&self, group_id: &GroupId, own_leaf_index: &LeafNodeIndex) -> ();
        fn write_group_epoch_secrets<
            GroupId: traits::GroupId<V>,
            GroupEpochSecrets: traits::GroupEpochSecrets<V>,
        >(&self, group_id: &GroupId, group_epoch_secrets: &GroupEpochSecrets) -> ();
        #[cfg(feature = "extensions-draft")]
        fn write_application_export_tree<
            GroupId: traits::GroupId<V>,
            ApplicationExportTree: traits::ApplicationExportTree<V>,
        >(&self, group_id: &GroupId, application_export_tree: &ApplicationExportTree) -> ();
        #[cfg(feature = "virtual-clients-draft")]
        fn write_vc_emulation_epoch_state<
            EpochId: traits::VcEpochId<V>,
            VcEmulationEpochState: traits::VcEmulationEpochState<V>,
        >(&self, epoch_id: &EpochId, vc_emulation_epoch_state: &VcEmulationEpochState) -> ();
        #[cfg(feature = "virtual-clients-draft")]
        fn write_vc_emulation_bindings<
            GroupId: traits::GroupId<V>,
            VcEmulationBindings: traits::VcEmulationBindings<V>,
        >(&self, group_id: &GroupId, bindings: &VcEmulationBindings) -> ();
        #[cfg(feature = "virtual-clients-draft")]
        fn write_registered_vc_emulation_epoch<
            GroupId: traits::GroupId<V>,
            RegisteredVcEmulationEpoch: traits::RegisteredVcEmulationEpoch<V>,
        >(&self, group_id: &GroupId, registered: &RegisteredVcEmulationEpoch) -> ();
        #[cfg(feature = "virtual-clients-draft")]
        fn write_vc_operation_tree<
            EpochId: traits::VcEpochId<V>,
            VcOperationTree: traits::VcOperationTree<V>,
        >(&self, epoch_id: &EpochId, vc_operation_tree: &VcOperationTree) -> ();
        fn write_signature_key_pair<
            SignaturePublicKey: traits::SignaturePublicKey<V>,
            SignatureKeyPair: traits::SignatureKeyPair<V>,
        >(&self, public_key: &SignaturePublicKey, signature_key_pair: &SignatureKeyPair) -> ();
        fn write_encryption_key_pair<
            EncryptionKey: traits::EncryptionKey<V>,
            HpkeKeyPair: traits::HpkeKeyPair<V>,
        >(&self, public_key: &EncryptionKey, key_pair: &HpkeKeyPair) -> ();
        fn write_encryption_epoch_key_pairs<
            GroupId: traits::GroupId<V>,
            EpochKey: traits::EpochKey<V>,
            HpkeKeyPair: traits::HpkeKeyPair<V>,
        >(
            &self,
            group_id: &GroupId,
            epoch: &EpochKey,
            leaf_index: u32,
            key_pairs: &[HpkeKeyPair],
        ) -> ();
        fn write_psk<
            PskId: traits::PskId<V>,
            PskBundle: traits::PskBundle<V>,
        >(&self, psk_id: &PskId, psk: &PskBundle) -> ();
        fn mls_group_join_config<
            GroupId: traits::GroupId<V>,
            MlsGroupJoinConfig: traits::MlsGroupJoinConfig<V>,
        >(&self, group_id: &GroupId) -> Option<MlsGroupJoinConfig>;
        fn own_leaf_nodes<
            GroupId: traits::GroupId<V>,
            LeafNode: traits::LeafNode<V>,
        >(&self, group_id: &GroupId) -> Vec<LeafNode>;
        fn queued_proposal_refs<
            GroupId: traits::GroupId<V>,
            ProposalRef: traits::ProposalRef<V>,
        >(&self, group_id: &GroupId) -> Vec<ProposalRef>;
        fn queued_proposals<
            GroupId: traits::GroupId<V>,
            ProposalRef: traits::ProposalRef<V>,
            QueuedProposal: traits::QueuedProposal<V>,
        >(&self, group_id: &GroupId) -> Vec<(ProposalRef, QueuedProposal)>;
        fn tree<
            GroupId: traits::GroupId<V>,
            TreeSync: traits::TreeSync<V>,
        >(&self, group_id: &GroupId) -> Option<TreeSync>;
        fn group_context<
            GroupId: traits::GroupId<V>,
            GroupContext: traits::GroupContext<V>,
        >(&self, group_id: &GroupId) -> Option<GroupContext>;
        fn interim_transcript_hash<
            GroupId: traits::GroupId<V>,
            InterimTranscriptHash: traits::InterimTranscriptHash<V>,
        >(&self, group_id: &GroupId) -> Option<InterimTranscriptHash>;
        fn confirmation_tag<
            GroupId: traits::GroupId<V>,
            ConfirmationTag: traits::ConfirmationTag<V>,
        >(&self, group_id: &GroupId) -> Option<ConfirmationTag>;
        fn group_state<
            GroupState: traits::GroupState<V>,
            GroupId: traits::GroupId<V>,
        >(&self, group_id: &GroupId) -> Option<GroupState>;
        fn message_secrets<
            GroupId: traits::GroupId<V>,
            MessageSecrets: traits::MessageSecrets<V>,
        >(&self, group_id: &GroupId) -> Option<MessageSecrets>;
        fn resumption_psk_store<
            GroupId: traits::GroupId<V>,
            ResumptionPskStore: traits::ResumptionPskStore<V>,
        >(&self, group_id: &GroupId) -> Option<ResumptionPskStore>;
        fn own_leaf_index<
            GroupId: traits::GroupId<V>,
            LeafNodeIndex: traits::LeafNodeIndex<V>,
        >(&self, group_id: &GroupId) -> Option<LeafNodeIndex>;
        fn group_epoch_secrets<
            GroupId: traits::GroupId<V>,
            GroupEpochSecrets: traits::GroupEpochSecrets<V>,
        >(&self, group_id: &GroupId) -> Option<GroupEpochSecrets>;
        fn signature_key_pair<
            SignaturePublicKey: traits::SignaturePublicKey<V>,
            SignatureKeyPair: traits::SignatureKeyPair<V>,
        >(&self, public_key: &SignaturePublicKey) -> Option<SignatureKeyPair>;
        fn encryption_key_pair<
            HpkeKeyPair: traits::HpkeKeyPair<V>,
            EncryptionKey: traits::EncryptionKey<V>,
        >(&self, public_key: &EncryptionKey) -> Option<HpkeKeyPair>;
        fn encryption_epoch_key_pairs<
            GroupId: traits::GroupId<V>,
            EpochKey: traits::EpochKey<V>,
            HpkeKeyPair: traits::HpkeKeyPair<V>,
        >(&self, group_id: &GroupId, epoch: &EpochKey, leaf_index: u32) -> Vec<HpkeKeyPair>;
        fn key_package<
            KeyPackageRef: traits::HashReference<V>,
            KeyPackage: traits::KeyPackage<V>,
        >(&self, hash_ref: &KeyPackageRef) -> Option<KeyPackage>;
        fn psk<
            PskBundle: traits::PskBundle<V>,
            PskId: traits::PskId<V>,
        >(&self, psk_id: &PskId) -> Option<PskBundle>;
        #[cfg(feature = "extensions-draft")]
        fn application_export_tree<
            GroupId: traits::GroupId<V>,
            ApplicationExportTree: traits::ApplicationExportTree<V>,
        >(&self, group_id: &GroupId) -> Option<ApplicationExportTree>;
        #[cfg(feature = "virtual-clients-draft")]
        fn vc_emulation_epoch_state<
            EpochId: traits::VcEpochId<V>,
            VcEmulationEpochState: traits::VcEmulationEpochState<V>,
        >(&self, epoch_id: &EpochId) -> Option<VcEmulationEpochState>;
        #[cfg(feature = "virtual-clients-draft")]
        fn vc_emulation_bindings<
            GroupId: traits::GroupId<V>,
            VcEmulationBindings: traits::VcEmulationBindings<V>,
        >(&self, group_id: &GroupId) -> Option<VcEmulationBindings>;
        #[cfg(feature = "virtual-clients-draft")]
        fn registered_vc_emulation_epoch<
            GroupId: traits::GroupId<V>,
            RegisteredVcEmulationEpoch: traits::RegisteredVcEmulationEpoch<V>,
        >(&self, group_id: &GroupId) -> Option<RegisteredVcEmulationEpoch>;
        #[cfg(feature = "virtual-clients-draft")]
        fn vc_operation_tree<
            EpochId: traits::VcEpochId<V>,
            VcOperationTree: traits::VcOperationTree<V>,
        >(&self, epoch_id: &EpochId) -> Option<VcOperationTree>;
        #[cfg(feature = "virtual-clients-draft")]
        fn retained_key_package_material<
            KeyPackageRef: traits::HashReference<V>,
            RetainedKeyPackageMaterial: traits::RetainedKeyPackageMaterial<V>,
        >(&self, hash_ref: &KeyPackageRef) -> Option<RetainedKeyPackageMaterial>;
        #[cfg(feature = "virtual-clients-draft")]
        fn has_retained_key_package_material_for_epoch<
            EpochId: traits::VcEpochId<V>,
        >(&self, epoch_id: &EpochId) -> bool;
        fn remove_proposal<
            GroupId: traits::GroupId<V>,
            ProposalRef: traits::ProposalRef<V>,
        >(&self, group_id: &GroupId, proposal_ref: &ProposalRef) -> ();
        fn delete_own_leaf_nodes<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
        fn delete_group_config<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
        fn delete_tree<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
        fn delete_confirmation_tag<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
        fn delete_group_state<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
        fn delete_context<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
        fn delete_interim_transcript_hash<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
        fn delete_message_secrets<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
        fn delete_all_resumption_psk_secrets<
            GroupId: traits::GroupId<V>,
        >(&self, group_id: &GroupId) -> ();
        fn delete_own_leaf_index<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
        fn delete_group_epoch_secrets<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
        fn clear_proposal_queue<
            GroupId: traits::GroupId<V>,
            ProposalRef: traits::ProposalRef<V>,
        >(&self, group_id: &GroupId) -> ();
        fn delete_signature_key_pair<
            SignaturePublicKey: traits::SignaturePublicKey<V>,
        >(&self, public_key: &SignaturePublicKey) -> ();
        fn delete_encryption_key_pair<
            EncryptionKey: traits::EncryptionKey<V>,
        >(&self, public_key: &EncryptionKey) -> ();
        fn delete_encryption_epoch_key_pairs<
            GroupId: traits::GroupId<V>,
            EpochKey: traits::EpochKey<V>,
        >(&self, group_id: &GroupId, epoch: &EpochKey, leaf_index: u32) -> ();
        fn delete_psk<PskKey: traits::PskId<V>>(&self, psk_id: &PskKey) -> ();
        #[cfg(feature = "extensions-draft")]
        fn delete_application_export_tree<
            GroupId: traits::GroupId<V>,
            ApplicationExportTree: traits::ApplicationExportTree<V>,
        >(&self, group_id: &GroupId) -> ();
        #[cfg(feature = "virtual-clients-draft")]
        fn delete_vc_emulation_bindings<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
        #[cfg(feature = "virtual-clients-draft")]
        fn delete_registered_vc_emulation_epoch<
            GroupId: traits::GroupId<V>,
        >(&self, group_id: &GroupId) -> ();
        #[cfg(feature = "virtual-clients-draft")]
        fn delete_retained_key_package_material<
            KeyPackageRef: traits::HashReference<V>,
        >(&self, hash_ref: &KeyPackageRef) -> ();
    }

    // openmls_sqlite_storage asks callers to run these two in a transaction.
    delegate! {
        atomic;
        #[cfg(feature = "virtual-clients-draft")]
        fn write_retained_key_package_material_batch<
            EpochId: traits::VcEpochId<V>,
            VcOperationTree: traits::VcOperationTree<V>,
            KeyPackageRef: traits::HashReference<V>,
            RetainedKeyPackageMaterial: traits::RetainedKeyPackageMaterial<V>,
        >(
            &self,
            epoch_id: &EpochId,
            operation_tree: &VcOperationTree,
            materials: &[(KeyPackageRef, RetainedKeyPackageMaterial)],
        ) -> ();
        #[cfg(feature = "virtual-clients-draft")]
        fn delete_vc_emulation_state_if_unreferenced<
            EpochId: traits::VcEpochId<V>,
        >(&self, epoch_id: &EpochId) -> bool;
    }
}
