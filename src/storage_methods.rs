//! The `StorageProvider` methods that [`PoolStorage`](crate::PoolStorage)
//! forwards to `openmls_sqlite_storage`, listed once.
//!
//! `storage_methods!(callback)` hands every method but the two KeyPackage
//! writes to `callback!`, each marked `read`, `plain` (a write), `atomic`
//! (several statements that must land together), `erasing` (deletes key
//! material) or `superseding` (overwrites an entity that holds secrets, so
//! that the secrets it held are destroyed). The forwarding implementation
//! and the scratch storage of generation workers are both written from this
//! one list.

macro_rules! storage_methods {
    ($callback:ident) => {
        $callback! {
            plain fn write_mls_join_config<
                GroupId: traits::GroupId<V>,
                MlsGroupJoinConfig: traits::MlsGroupJoinConfig<V>,
            >(&self, group_id: &GroupId, config: &MlsGroupJoinConfig) -> ();
            plain fn append_own_leaf_node<
                GroupId: traits::GroupId<V>,
                LeafNode: traits::LeafNode<V>,
            >(&self, group_id: &GroupId, leaf_node: &LeafNode) -> ();
            plain fn queue_proposal<
                GroupId: traits::GroupId<V>,
                ProposalRef: traits::ProposalRef<V>,
                QueuedProposal: traits::QueuedProposal<V>,
            >(&self, group_id: &GroupId, proposal_ref: &ProposalRef, proposal: &QueuedProposal) -> ();
            plain fn write_tree<
                GroupId: traits::GroupId<V>,
                TreeSync: traits::TreeSync<V>,
            >(&self, group_id: &GroupId, tree: &TreeSync) -> ();
            plain fn write_interim_transcript_hash<
                GroupId: traits::GroupId<V>,
                InterimTranscriptHash: traits::InterimTranscriptHash<V>,
            >(&self, group_id: &GroupId, interim_transcript_hash: &InterimTranscriptHash) -> ();
            plain fn write_context<
                GroupId: traits::GroupId<V>,
                GroupContext: traits::GroupContext<V>,
            >(&self, group_id: &GroupId, group_context: &GroupContext) -> ();
            plain fn write_confirmation_tag<
                GroupId: traits::GroupId<V>,
                ConfirmationTag: traits::ConfirmationTag<V>,
            >(&self, group_id: &GroupId, confirmation_tag: &ConfirmationTag) -> ();
            plain fn write_group_state<
                GroupState: traits::GroupState<V>,
                GroupId: traits::GroupId<V>,
            >(&self, group_id: &GroupId, group_state: &GroupState) -> ();
            superseding fn write_message_secrets<
                GroupId: traits::GroupId<V>,
                MessageSecrets: traits::MessageSecrets<V>,
            >(&self, group_id: &GroupId, message_secrets: &MessageSecrets) -> ();
            superseding fn write_resumption_psk_store<
                GroupId: traits::GroupId<V>,
                ResumptionPskStore: traits::ResumptionPskStore<V>,
            >(&self, group_id: &GroupId, resumption_psk_store: &ResumptionPskStore) -> ();
            plain fn write_own_leaf_index<
                GroupId: traits::GroupId<V>,
                LeafNodeIndex: traits::LeafNodeIndex<V>,
            >(&self, group_id: &GroupId, own_leaf_index: &LeafNodeIndex) -> ();
            superseding fn write_group_epoch_secrets<
                GroupId: traits::GroupId<V>,
                GroupEpochSecrets: traits::GroupEpochSecrets<V>,
            >(&self, group_id: &GroupId, group_epoch_secrets: &GroupEpochSecrets) -> ();
            #[cfg(feature = "extensions-draft")]
            superseding fn write_application_export_tree<
                GroupId: traits::GroupId<V>,
                ApplicationExportTree: traits::ApplicationExportTree<V>,
            >(&self, group_id: &GroupId, application_export_tree: &ApplicationExportTree) -> ();
            #[cfg(feature = "virtual-clients-draft")]
            superseding fn write_vc_emulation_epoch_state<
                EpochId: traits::VcEpochId<V>,
                VcEmulationEpochState: traits::VcEmulationEpochState<V>,
            >(&self, epoch_id: &EpochId, vc_emulation_epoch_state: &VcEmulationEpochState) -> ();
            #[cfg(feature = "virtual-clients-draft")]
            plain fn write_vc_emulation_bindings<
                GroupId: traits::GroupId<V>,
                VcEmulationBindings: traits::VcEmulationBindings<V>,
            >(&self, group_id: &GroupId, bindings: &VcEmulationBindings) -> ();
            #[cfg(feature = "virtual-clients-draft")]
            plain fn write_registered_vc_emulation_epoch<
                GroupId: traits::GroupId<V>,
                RegisteredVcEmulationEpoch: traits::RegisteredVcEmulationEpoch<V>,
            >(&self, group_id: &GroupId, registered: &RegisteredVcEmulationEpoch) -> ();
            #[cfg(feature = "virtual-clients-draft")]
            superseding fn write_vc_operation_tree<
                EpochId: traits::VcEpochId<V>,
                VcOperationTree: traits::VcOperationTree<V>,
            >(&self, epoch_id: &EpochId, vc_operation_tree: &VcOperationTree) -> ();
            plain fn write_signature_key_pair<
                SignaturePublicKey: traits::SignaturePublicKey<V>,
                SignatureKeyPair: traits::SignatureKeyPair<V>,
            >(&self, public_key: &SignaturePublicKey, signature_key_pair: &SignatureKeyPair) -> ();
            plain fn write_encryption_key_pair<
                EncryptionKey: traits::EncryptionKey<V>,
                HpkeKeyPair: traits::HpkeKeyPair<V>,
            >(&self, public_key: &EncryptionKey, key_pair: &HpkeKeyPair) -> ();
            superseding fn write_encryption_epoch_key_pairs<
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
            superseding fn write_psk<
                PskId: traits::PskId<V>,
                PskBundle: traits::PskBundle<V>,
            >(&self, psk_id: &PskId, psk: &PskBundle) -> ();
            read fn mls_group_join_config<
                GroupId: traits::GroupId<V>,
                MlsGroupJoinConfig: traits::MlsGroupJoinConfig<V>,
            >(&self, group_id: &GroupId) -> Option<MlsGroupJoinConfig>;
            read fn own_leaf_nodes<
                GroupId: traits::GroupId<V>,
                LeafNode: traits::LeafNode<V>,
            >(&self, group_id: &GroupId) -> Vec<LeafNode>;
            read fn queued_proposal_refs<
                GroupId: traits::GroupId<V>,
                ProposalRef: traits::ProposalRef<V>,
            >(&self, group_id: &GroupId) -> Vec<ProposalRef>;
            read fn queued_proposals<
                GroupId: traits::GroupId<V>,
                ProposalRef: traits::ProposalRef<V>,
                QueuedProposal: traits::QueuedProposal<V>,
            >(&self, group_id: &GroupId) -> Vec<(ProposalRef, QueuedProposal)>;
            read fn tree<
                GroupId: traits::GroupId<V>,
                TreeSync: traits::TreeSync<V>,
            >(&self, group_id: &GroupId) -> Option<TreeSync>;
            read fn group_context<
                GroupId: traits::GroupId<V>,
                GroupContext: traits::GroupContext<V>,
            >(&self, group_id: &GroupId) -> Option<GroupContext>;
            read fn interim_transcript_hash<
                GroupId: traits::GroupId<V>,
                InterimTranscriptHash: traits::InterimTranscriptHash<V>,
            >(&self, group_id: &GroupId) -> Option<InterimTranscriptHash>;
            read fn confirmation_tag<
                GroupId: traits::GroupId<V>,
                ConfirmationTag: traits::ConfirmationTag<V>,
            >(&self, group_id: &GroupId) -> Option<ConfirmationTag>;
            read fn group_state<
                GroupState: traits::GroupState<V>,
                GroupId: traits::GroupId<V>,
            >(&self, group_id: &GroupId) -> Option<GroupState>;
            read fn message_secrets<
                GroupId: traits::GroupId<V>,
                MessageSecrets: traits::MessageSecrets<V>,
            >(&self, group_id: &GroupId) -> Option<MessageSecrets>;
            read fn resumption_psk_store<
                GroupId: traits::GroupId<V>,
                ResumptionPskStore: traits::ResumptionPskStore<V>,
            >(&self, group_id: &GroupId) -> Option<ResumptionPskStore>;
            read fn own_leaf_index<
                GroupId: traits::GroupId<V>,
                LeafNodeIndex: traits::LeafNodeIndex<V>,
            >(&self, group_id: &GroupId) -> Option<LeafNodeIndex>;
            read fn group_epoch_secrets<
                GroupId: traits::GroupId<V>,
                GroupEpochSecrets: traits::GroupEpochSecrets<V>,
            >(&self, group_id: &GroupId) -> Option<GroupEpochSecrets>;
            read fn signature_key_pair<
                SignaturePublicKey: traits::SignaturePublicKey<V>,
                SignatureKeyPair: traits::SignatureKeyPair<V>,
            >(&self, public_key: &SignaturePublicKey) -> Option<SignatureKeyPair>;
            read fn encryption_key_pair<
                HpkeKeyPair: traits::HpkeKeyPair<V>,
                EncryptionKey: traits::EncryptionKey<V>,
            >(&self, public_key: &EncryptionKey) -> Option<HpkeKeyPair>;
            read fn encryption_epoch_key_pairs<
                GroupId: traits::GroupId<V>,
                EpochKey: traits::EpochKey<V>,
                HpkeKeyPair: traits::HpkeKeyPair<V>,
            >(&self, group_id: &GroupId, epoch: &EpochKey, leaf_index: u32) -> Vec<HpkeKeyPair>;
            read fn key_package<
                KeyPackageRef: traits::HashReference<V>,
                KeyPackage: traits::KeyPackage<V>,
            >(&self, hash_ref: &KeyPackageRef) -> Option<KeyPackage>;
            read fn psk<
                PskBundle: traits::PskBundle<V>,
                PskId: traits::PskId<V>,
            >(&self, psk_id: &PskId) -> Option<PskBundle>;
            #[cfg(feature = "extensions-draft")]
            read fn application_export_tree<
                GroupId: traits::GroupId<V>,
                ApplicationExportTree: traits::ApplicationExportTree<V>,
            >(&self, group_id: &GroupId) -> Option<ApplicationExportTree>;
            #[cfg(feature = "virtual-clients-draft")]
            read fn vc_emulation_epoch_state<
                EpochId: traits::VcEpochId<V>,
                VcEmulationEpochState: traits::VcEmulationEpochState<V>,
            >(&self, epoch_id: &EpochId) -> Option<VcEmulationEpochState>;
            #[cfg(feature = "virtual-clients-draft")]
            read fn vc_emulation_bindings<
                GroupId: traits::GroupId<V>,
                VcEmulationBindings: traits::VcEmulationBindings<V>,
            >(&self, group_id: &GroupId) -> Option<VcEmulationBindings>;
            #[cfg(feature = "virtual-clients-draft")]
            read fn registered_vc_emulation_epoch<
                GroupId: traits::GroupId<V>,
                RegisteredVcEmulationEpoch: traits::RegisteredVcEmulationEpoch<V>,
            >(&self, group_id: &GroupId) -> Option<RegisteredVcEmulationEpoch>;
            #[cfg(feature = "virtual-clients-draft")]
            read fn vc_operation_tree<
                EpochId: traits::VcEpochId<V>,
                VcOperationTree: traits::VcOperationTree<V>,
            >(&self, epoch_id: &EpochId) -> Option<VcOperationTree>;
            #[cfg(feature = "virtual-clients-draft")]
            read fn retained_key_package_material<
                KeyPackageRef: traits::HashReference<V>,
                RetainedKeyPackageMaterial: traits::RetainedKeyPackageMaterial<V>,
            >(&self, hash_ref: &KeyPackageRef) -> Option<RetainedKeyPackageMaterial>;
            #[cfg(feature = "virtual-clients-draft")]
            read fn has_retained_key_package_material_for_epoch<
                EpochId: traits::VcEpochId<V>,
            >(&self, epoch_id: &EpochId) -> bool;
            plain fn remove_proposal<
                GroupId: traits::GroupId<V>,
                ProposalRef: traits::ProposalRef<V>,
            >(&self, group_id: &GroupId, proposal_ref: &ProposalRef) -> ();
            plain fn delete_own_leaf_nodes<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
            plain fn delete_group_config<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
            plain fn delete_tree<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
            plain fn delete_confirmation_tag<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
            plain fn delete_group_state<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
            plain fn delete_context<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
            plain fn delete_interim_transcript_hash<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
            erasing fn delete_message_secrets<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
            erasing fn delete_all_resumption_psk_secrets<
                GroupId: traits::GroupId<V>,
            >(&self, group_id: &GroupId) -> ();
            plain fn delete_own_leaf_index<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
            erasing fn delete_group_epoch_secrets<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
            plain fn clear_proposal_queue<
                GroupId: traits::GroupId<V>,
                ProposalRef: traits::ProposalRef<V>,
            >(&self, group_id: &GroupId) -> ();
            erasing fn delete_signature_key_pair<
                SignaturePublicKey: traits::SignaturePublicKey<V>,
            >(&self, public_key: &SignaturePublicKey) -> ();
            erasing fn delete_encryption_key_pair<
                EncryptionKey: traits::EncryptionKey<V>,
            >(&self, public_key: &EncryptionKey) -> ();
            erasing fn delete_encryption_epoch_key_pairs<
                GroupId: traits::GroupId<V>,
                EpochKey: traits::EpochKey<V>,
            >(&self, group_id: &GroupId, epoch: &EpochKey, leaf_index: u32) -> ();
            erasing fn delete_psk<PskKey: traits::PskId<V>>(&self, psk_id: &PskKey) -> ();
            #[cfg(feature = "extensions-draft")]
            erasing fn delete_application_export_tree<
                GroupId: traits::GroupId<V>,
                ApplicationExportTree: traits::ApplicationExportTree<V>,
            >(&self, group_id: &GroupId) -> ();
            #[cfg(feature = "virtual-clients-draft")]
            plain fn delete_vc_emulation_bindings<GroupId: traits::GroupId<V>>(&self, group_id: &GroupId) -> ();
            #[cfg(feature = "virtual-clients-draft")]
            plain fn delete_registered_vc_emulation_epoch<
                GroupId: traits::GroupId<V>,
            >(&self, group_id: &GroupId) -> ();
            #[cfg(feature = "virtual-clients-draft")]
            erasing fn delete_retained_key_package_material<
                KeyPackageRef: traits::HashReference<V>,
            >(&self, hash_ref: &KeyPackageRef) -> ();
            #[cfg(feature = "virtual-clients-draft")]
            superseding fn write_retained_key_package_material_batch<
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
            erasing fn delete_vc_emulation_state_if_unreferenced<
                EpochId: traits::VcEpochId<V>,
            >(&self, epoch_id: &EpochId) -> bool;
        }
    };
}

pub(crate) use storage_methods;
